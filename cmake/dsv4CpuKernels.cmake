# dsv4::cpu_kernels, the optional compiled component: the CPU kernels instantiated for AVX2,
# AVX-512 and AVX-512 VNNI (the indexer scores also for AVX-512 + BF16), one picked at start-up
# (kernels/cpu/fast_bundle.hpp), plus the forward pass of both CPU bundles. Without it, dsv4 is
# header-only and the fast kernels use whatever -m flags the including file is compiled with.
#
# The packages (CMake install, vcpkg, Conan) ship these sources, not binaries: this module builds
# the component in the consumer's project with the consumer's compiler, on first use only.

# dsv4_add_cpu_kernels(<target> <directory holding cpu_*.cpp> <the dsv4 header target>)
function(dsv4_add_cpu_kernels target src core)
  if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64|i[3-6]86)$")
    add_library(${target} STATIC ${src}/cpu_avx2.cpp ${src}/cpu_avx512.cpp ${src}/cpu_avx512vnni.cpp
      ${src}/cpu_avx512bf16.cpp ${src}/model_instances.cpp)
    set_source_files_properties(${src}/cpu_avx2.cpp PROPERTIES COMPILE_OPTIONS "-mavx2;-mfma;-mf16c")
    set_source_files_properties(${src}/cpu_avx512.cpp PROPERTIES
      COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mfma;-mf16c")
    set_source_files_properties(${src}/cpu_avx512vnni.cpp PROPERTIES
      COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512vnni;-mfma;-mf16c")
    set_source_files_properties(${src}/cpu_avx512bf16.cpp PROPERTIES
      COMPILE_OPTIONS "-mavx512f;-mavx512bw;-mavx512vl;-mavx512dq;-mavx512bf16;-mfma;-mf16c")
    target_compile_definitions(${target} PUBLIC DSV4_MULTIARCH)
  else()  # other processors: the portable instance (xsimd's default architecture)
    add_library(${target} STATIC ${src}/model_instances.cpp)
  endif()
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  target_link_libraries(${target} PUBLIC ${core})
endfunction()

# In an installed package the sources lie beside this file: define the target there.
if(TARGET dsv4::dsv4 AND NOT TARGET dsv4::cpu_kernels AND EXISTS "${CMAKE_CURRENT_LIST_DIR}/src/cpu_avx2.cpp")
  dsv4_add_cpu_kernels(dsv4_cpu_kernels "${CMAKE_CURRENT_LIST_DIR}/src" dsv4::dsv4)
  set_target_properties(dsv4_cpu_kernels PROPERTIES EXCLUDE_FROM_ALL ON)
  add_library(dsv4::cpu_kernels ALIAS dsv4_cpu_kernels)
endif()
