# Conan 2 recipe for dsv4: a header-library package (headers, plus the kernel sources that the
# packaged CMake build module compiles in the consumer's project; no binaries, one package id).
import os

from conan import ConanFile
from conan.tools.files import copy, load
from conan.tools.layout import basic_layout

required_conan_version = ">=2.0"


class Dsv4Conan(ConanFile):
    name = "dsv4"
    description = "Header-only C++20 inference library for DeepSeek-V4 and DeepSeek-V3 (CPU, optional CUDA)."
    license = "MIT"
    homepage = "https://github.com/dsv4/dsv4"
    url = "https://github.com/dsv4/dsv4"
    topics = ("deepseek", "llm", "inference", "header-only")
    package_type = "header-library"
    settings = "os", "arch", "compiler", "build_type"
    exports_sources = ("include/*", "src/*.cpp", "src/cuda/*", "cmake/dsv4CpuKernels.cmake", "cmake/dsv4Cuda.cmake",
                       "LICENSE", "VERSION")
    no_copy_source = True

    def set_version(self):
        # One place for the version: the VERSION file CMake and the vcpkg port read too.
        self.version = load(self, os.path.join(self.recipe_folder, "VERSION")).strip()

    def layout(self):
        basic_layout(self, src_folder=".")

    def requirements(self):
        self.requires("nlohmann_json/3.11.2")
        self.requires("xsimd/8.1.0")
        self.requires("pcre2/10.42")

    def validate(self):
        from conan.tools.build import check_min_cppstd
        check_min_cppstd(self, 20)

    def package_id(self):
        self.info.clear()

    def package(self):
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))
        copy(self, "*", os.path.join(self.source_folder, "include"), os.path.join(self.package_folder, "include"))
        share = os.path.join(self.package_folder, "share", "dsv4")
        copy(self, "dsv4CpuKernels.cmake", os.path.join(self.source_folder, "cmake"), share)
        copy(self, "dsv4Cuda.cmake", os.path.join(self.source_folder, "cmake"), share)
        copy(self, "*", os.path.join(self.source_folder, "src"), os.path.join(share, "src"))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        self.cpp_info.set_property("cmake_file_name", "dsv4")
        self.cpp_info.set_property("cmake_target_name", "dsv4::dsv4")
        self.cpp_info.set_property("pkg_config_name", "dsv4")
        # CMakeDeps includes these after the targets: they define dsv4::cpu_kernels (and dsv4::cuda in a
        # project that enables CUDA) from the sources.
        self.cpp_info.builddirs = [os.path.join("share", "dsv4")]
        self.cpp_info.set_property("cmake_build_modules", [os.path.join("share", "dsv4", "dsv4CpuKernels.cmake"),
                                                           os.path.join("share", "dsv4", "dsv4Cuda.cmake")])
        self.cpp_info.requires = ["nlohmann_json::nlohmann_json", "xsimd::xsimd", "pcre2::pcre2-8"]
        if self.settings.os in ["Linux", "FreeBSD"]:
            self.cpp_info.system_libs = ["pthread"]
        # OpenMP comes with the compiler: GCC and Clang need -fopenmp.
        self.cpp_info.cxxflags = ["-fopenmp"]
        self.cpp_info.sharedlinkflags = ["-fopenmp"]
        self.cpp_info.exelinkflags = ["-fopenmp"]
