// Catch2 v2 main for a standalone build of the tests in this folder.
#define CATCH_CONFIG_MAIN
// g++ 12 with -fsanitize=address reports a false -Wmaybe-uninitialized inside libstdc++'s
// <regex>, which catch.hpp includes; nothing of ours is compiled here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <catch2/catch.hpp>
#pragma GCC diagnostic pop
