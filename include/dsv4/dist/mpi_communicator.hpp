#pragma once
// Communicator over MPI (Open MPI, MPICH). Only programs that include this header need MPI; the
// rest of the library sees the Communicator interface.
//
// Collectives are non-blocking requests polled against a deadline: a rank that died or hangs ends
// the run with an Error on every surviving rank instead of a hang (MPI itself has no time-outs).
// The deadline is DSV4_COMM_TIMEOUT_S seconds (default 300), counted from entering a collective,
// so it bounds the imbalance between ranks, not the length of a step.
#include <mpi.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>
#include <unistd.h>

#include "dsv4/core/communicator.hpp"

namespace dsv4 {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm comm = MPI_COMM_WORLD, double timeout_s = default_timeout()) : comm_(comm),
      timeout_s_(timeout_s) {
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  void allgather(const void* send, size_t bytes, void* recv) override {
    if (bytes > size_t(INT32_MAX)) fail("MPI allgather: ", bytes, " bytes exceed one MPI message");
    MPI_Request req;
    check(MPI_Iallgather(send, int(bytes), MPI_BYTE, recv, int(bytes), MPI_BYTE, comm_, &req), "MPI_Iallgather");
    wait(req, "allgather");
  }

  static double default_timeout() {
    if (const char* s = std::getenv("DSV4_COMM_TIMEOUT_S"); s && *s) {
      char* end = nullptr;
      const double v = std::strtod(s, &end);
      if (end && *end == 0 && v > 0) return v;
      fail("DSV4_COMM_TIMEOUT_S: '", s, "' is not a positive number of seconds");
    }
    return 300;
  }

 private:
  void check(int rc, const char* call) const {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    fail(call, " failed on rank ", rank_, ": ", std::string(text, size_t(len)));
  }

  // Polls with a short sleep once the fast path is over: a waiting rank should not take a core
  // from the threads of a rank it shares a machine with.
  void wait(MPI_Request& req, const char* what) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), "MPI_Test");
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (done) {
        seconds_ += waited;
        return;
      }
      if (waited > timeout_s_)
        fail("rank ", rank_, " of ", size_, ": ", what, " timed out after ", timeout_s_,
             " s (another rank died, hangs or runs a different program; DSV4_COMM_TIMEOUT_S sets the limit)");
      if (spins > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  MPI_Comm comm_;
  double timeout_s_;
  int rank_ = 0, size_ = 1;
};

// MPI for the life of a program: initialised on construction, finalised on a clean exit. After an
// error (a collective that timed out leaves requests in flight) call abort(): MPI_Finalize would
// wait for the dead rank.
class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    // mpirun ends the other ranks with SIGTERM when one dies: say so on each of them.
    std::signal(SIGTERM, [](int) {
      static const char msg[] = "dsv4: terminated by the MPI launcher (another rank failed; see its error)\n";
      ssize_t ignored = ::write(2, msg, sizeof msg - 1);
      (void)ignored;
      std::_Exit(143);
    });
  }
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
  ~MpiRuntime() {
    if (!aborted_) MPI_Finalize();
  }
  int rank() const { return rank_; }
  [[noreturn]] void abort(int code) {
    aborted_ = true;
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

  // True when an MPI launcher (mpirun, srun, hydra) started this process.
  static bool launched_by_mpi() {
    for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
      if (const char* v = std::getenv(var); v && *v) return true;
    return false;
  }

 private:
  int rank_ = 0;
  bool aborted_ = false;
};

}  // namespace dsv4
