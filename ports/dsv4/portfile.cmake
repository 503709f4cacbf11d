# dsv4: header-only (plus kernel sources its CMake package builds in the consumer's project), so
# one release configuration and no binaries, as vcpkg's header-only ports do.
set(VCPKG_BUILD_TYPE release)

# As an overlay port inside the dsv4 repository (vcpkg install dsv4 --overlay-ports=<repo>/ports)
# the source is the repository itself; a registry port would use vcpkg_from_github instead.
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DDSV4_BUILD_TESTS=OFF
    -DDSV4_BUILD_TOOLS=OFF
    -DDSV4_BUILD_BENCH=OFF
    -DDSV4_BUILD_FUZZ=OFF
    -DDSV4_WITH_MPI=OFF
    -DDSV4_WITH_CUDA=OFF
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/dsv4)
vcpkg_fixup_pkgconfig()

file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/lib" "${CURRENT_PACKAGES_DIR}/debug")
file(REMOVE_RECURSE "${CURRENT_PACKAGES_DIR}/share/doc")
file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
