# dsv4::cuda, the optional CUDA backend: device-resident weights in their stored formats, the
# kernels, and the forward pass on the GPU (include/dsv4/cuda/). The header-only core never includes
# a CUDA header; this component is what a program links to run on an NVIDIA GPU.
#
# Like dsv4::cpu_kernels, the packages ship these sources, not binaries: a consumer project that
# enables the CUDA language gets the target built with its own nvcc, on first use only.

# dsv4_add_cuda(<target> <directory holding *.cu> <the dsv4 header target>)
function(dsv4_add_cuda target src core)
  find_package(CUDAToolkit REQUIRED)
  file(GLOB cu_sources CONFIGURE_DEPENDS ${src}/*.cu ${src}/*.cpp)
  add_library(${target} STATIC ${cu_sources})
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON CUDA_SEPARABLE_COMPILATION OFF)
  # CMake 3.25 knows no CUDA20 dialect for nvcc 13: give the flag directly (the headers use C++20).
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-std=c++20 --expt-relaxed-constexpr
    -Xcompiler=-Wall,-Wextra>)
  # The GEMVs use cp.async and mma.sync (sm_80 and later): where the project lists an older
  # architecture (e.g. nvcc's default), the backend is built for Hopper (sm_90), what it targets.
  set(archs "${CMAKE_CUDA_ARCHITECTURES}")
  foreach(a IN LISTS CMAKE_CUDA_ARCHITECTURES)
    string(REGEX MATCH "^[0-9]+" n "${a}")
    if(NOT "${n}" STREQUAL "" AND "${n}" LESS 80)
      set(archs 90)
    endif()
  endforeach()
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES "${archs}")
  target_link_libraries(${target} PUBLIC ${core} CUDA::cudart CUDA::cublas)
  target_compile_definitions(${target} PUBLIC DSV4_WITH_CUDA)
endfunction()

# In an installed package the sources lie beside this file: define the target there when the
# consuming project has enabled CUDA.
if(TARGET dsv4::dsv4 AND NOT TARGET dsv4::cuda AND CMAKE_CUDA_COMPILER AND EXISTS "${CMAKE_CURRENT_LIST_DIR}/src/cuda")
  dsv4_add_cuda(dsv4_cuda "${CMAKE_CURRENT_LIST_DIR}/src/cuda" dsv4::dsv4)
  set_target_properties(dsv4_cuda PROPERTIES EXCLUDE_FROM_ALL ON)
  add_library(dsv4::cuda ALIAS dsv4_cuda)
endif()
