// dsv4::LocalGroup (ranks as threads of one process): its allgather and barrier, its time-out when
// a rank stays away, and the golden V4 case split over 2 and 3 thread ranks on the CPU answering
// like one process, every rank bit-identical (the host half of test_cuda_split's setup).
#include <catch2/catch.hpp>
#include <exception>
#include <thread>

#include "dsv4/core/local_group.hpp"
#include "golden.hpp"

using namespace dsv4;

namespace {

// Runs fn(rank) on `ranks` threads; rethrows the first failure.
template <class Fn>
void on_ranks(int ranks, Fn fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(ranks));
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks; ++r)
    threads.emplace_back([&, r] {
      try {
        fn(r);
      } catch (...) {
        errors[size_t(r)] = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace

TEST_CASE("LocalGroup gathers in rank order on every rank", "[local_group]") {
  LocalGroup g(3, 30);
  std::vector<std::vector<int>> got(3);
  on_ranks(3, [&](int r) {
    for (int round = 0; round < 50; ++round) {
      const int mine[2] = {r, round};
      std::vector<int> all(6);
      g.comm(r).allgather(mine, sizeof mine, all.data());
      if (round == 49) got[size_t(r)] = all;
      for (int q = 0; q < 3; ++q)
        if (all[size_t(2 * q)] != q || all[size_t(2 * q + 1)] != round) fail("rank ", r, " round ", round, " wrong");
    }
  });
  for (auto& v : got) CHECK(v == std::vector<int>{0, 49, 1, 49, 2, 49});
}

TEST_CASE("LocalGroup fails instead of waiting forever for a missing rank", "[local_group]") {
  LocalGroup g(2, 0.2);
  int x = 1, all[2];
  CHECK_THROWS_WITH(g.comm(0).allgather(&x, sizeof x, all), Catch::Contains("waited"));
  CHECK_THROWS_WITH(g.barrier(), Catch::Contains("broken"));
}

TEST_CASE("golden case split over thread ranks on the CPU", "[local_group][golden]") {
  for (const auto& c : dsv4::testing::golden_cases("DeepseekV4ForCausalLM")) {
    const std::string dir = c.dir + "/hf";
    const dsv4::testing::Golden g(c.dir + "/expected.safetensors");
    const auto ids = g.ids("input_ids");
    const std::vector<int32_t> head(ids.begin(), ids.begin() + 40);
    const auto whole = dsv4::testing::run_in_chunks(Model::load(dir), head, {7, 13});
    for (int ranks : {2, 3}) {
      LocalGroup group(ranks, 60);
      std::vector<std::vector<float>> out(static_cast<size_t>(ranks));
      on_ranks(ranks, [&](int r) {
        const Model m = Model::load(dir, Distribution{&group.comm(r)});
        out[size_t(r)] = dsv4::testing::run_in_chunks(m, head, {7, 13});
      });
      INFO(ranks << " ranks: split vs one process " << dsv4::testing::max_abs_diff(out[0], whole));
      CHECK(dsv4::testing::max_abs_diff(out[0], whole) < 1e-4);
      for (int r = 1; r < ranks; ++r) CHECK(out[size_t(r)] == out[0]);
    }
  }
}
