// The CUDA emulation runtime: thread pool, block and warp barriers, launch checks (see cuda_emu.h).
#include "cuda_emu.h"

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace cuemu {
namespace {

long long env_int(const char* name, long long dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : dflt;
}

std::chrono::milliseconds timeout() {
  return std::chrono::milliseconds(env_int("FASTGAN_EMU_TIMEOUT_S", 60) * 1000);
}

// Lock discipline (it matters to ThreadSanitizer, which must see only the synchronisation the
// kernel itself performs): each warp has its own mutex and the block barrier another, so warp
// intrinsics never order threads of different warps; the bookkeeping every thread touches
// (deadlock count, exits, failure) is atomics with relaxed order, which create no happens-before.
struct Warp {
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0;  // guarded by mu (the atomics below mirror it for messages)
  uint64_t gen = 0;
  Site site{"", 0};
  unsigned mask = 0;
  WarpOp op = WarpOp::sync;
  unsigned exists = 0, exited = 0;
  std::atomic<int> waiting{0}, site_line{0};
  std::atomic<const char*> site_file{""};
  // Two slot arrays used alternately: a lane that races ahead to the next exchange writes the
  // other array, so it cannot overwrite a value a slower lane has still to read.
  unsigned char slots[2][32][16];
};

// The block that runs now (blocks run one at a time).
struct Block {
  int n = 0;
  uint3 idx{0, 0, 0};
  std::mutex bar_mu;
  std::condition_variable bar_cv;
  int bar_arrived = 0;  // guarded by bar_mu
  uint64_t bar_gen = 0;
  Site bar_site{"", 0};
  std::atomic<int> bar_waiting{0}, bar_line{0};
  std::atomic<const char*> bar_file{""};
  std::atomic<int> exited{0}, first_exited{-1};
  // threads waiting (not yet released by the thread that completes their barrier) + exited:
  // when it reaches n while someone waits, no thread can release the others.
  std::atomic<int> stalled{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string error;
  std::vector<std::unique_ptr<Warp>> warps;

  // Only between blocks, with no worker running.
  void reset(int threads, uint3 block_idx) {
    n = threads;
    idx = block_idx;
    bar_arrived = 0;
    bar_waiting = 0;
    exited = 0;
    first_exited = -1;
    stalled = 0;
    failed = false;
    error.clear();
    const int nw = (threads + 31) / 32;
    while (int(warps.size()) < nw) warps.push_back(std::make_unique<Warp>());
    for (int w = 0; w < nw; ++w) {
      Warp& W = *warps[w];
      W.arrived = 0;
      W.waiting = 0;
      W.exited = 0;
      const int lanes = std::min(32, threads - 32 * w);
      W.exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
    }
  }

  // Records the first error and wakes every waiting thread (they unwind with Abort). Must be
  // called without holding bar_mu or a warp's mutex.
  void fail(const std::string& msg) {
    {
      std::lock_guard<std::mutex> l(err_mu);
      if (!failed.load(std::memory_order_relaxed)) {
        error = msg;
        failed.store(true, std::memory_order_relaxed);
      }
    }
    {
      std::lock_guard<std::mutex> l(bar_mu);
      bar_cv.notify_all();
    }
    for (int w = 0; w < (n + 31) / 32; ++w) {
      std::lock_guard<std::mutex> l(warps[w]->mu);
      warps[w]->cv.notify_all();
    }
  }

  bool has_failed() const { return failed.load(std::memory_order_relaxed); }

  std::string state() const {
    std::ostringstream os;
    if (int k = bar_waiting.load(std::memory_order_relaxed))
      os << "; " << k << " thread(s) wait at __syncthreads() at " << bar_file.load(std::memory_order_relaxed) << ":"
         << bar_line.load(std::memory_order_relaxed);
    for (int w = 0; w < (n + 31) / 32; ++w)
      if (int k = warps[w]->waiting.load(std::memory_order_relaxed))
        os << "; warp " << w << ": " << k << " lane(s) wait at a warp intrinsic at "
           << warps[w]->site_file.load(std::memory_order_relaxed) << ":"
           << warps[w]->site_line.load(std::memory_order_relaxed);
    if (int k = exited.load(std::memory_order_relaxed)) os << "; " << k << " thread(s) exited";
    return os.str();
  }

  // Waits (lock held) until done(); unwinds with Abort on failure, deadlock or timeout.
  template <typename Pred>
  void wait(std::unique_lock<std::mutex>& l, std::condition_variable& cv, Pred done, Site s) {
    if (stalled.fetch_add(1, std::memory_order_relaxed) + 1 == n) {
      l.unlock();
      fail("deadlock at " + where(s) + ": every live thread of the block waits and none can release the others" +
           state());
      throw Abort{};
    }
    const auto deadline = std::chrono::steady_clock::now() + timeout();
    while (!has_failed() && !done()) {
      if (cv.wait_until(l, deadline) == std::cv_status::timeout && !has_failed() && !done()) {
        l.unlock();
        fail("timeout at " + where(s) + ": a deadlock, or a thread that never reaches the barrier" + state());
        throw Abort{};
      }
    }
    if (has_failed()) throw Abort{};
  }
};

Block g_block;
std::mutex g_launch_mu;

int linear_tid() { return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }

std::string thread_name(int tid) {
  std::ostringstream os;
  os << "thread " << tid << " (warp " << tid / 32 << ", lane " << tid % 32 << ")";
  return os.str();
}

std::string hex(unsigned m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", m);
  return buf;
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::down: return "__shfl_down_sync";
    case WarpOp::up: return "__shfl_up_sync";
    case WarpOp::xor_: return "__shfl_xor_sync";
    case WarpOp::idx: return "__shfl_sync";
    case WarpOp::sync: return "__syncwarp";
    case WarpOp::ballot: return "__ballot_sync";
    case WarpOp::any: return "__any_sync";
    case WarpOp::all: return "__all_sync";
  }
  return "?";
}

[[noreturn]] void fail_here(std::unique_lock<std::mutex>& l, Block& B, const std::string& msg) {
  l.unlock();
  B.fail(msg);
  throw Abort{};
}

void thread_exit(int tid) {
  Block& B = g_block;
  B.exited.fetch_add(1, std::memory_order_relaxed);
  int none = -1;
  B.first_exited.compare_exchange_strong(none, tid, std::memory_order_relaxed);
  std::string msg;
  Warp& W = *B.warps[tid / 32];
  const unsigned bit = 1u << (tid % 32);
  {
    std::lock_guard<std::mutex> l(W.mu);
    W.exited |= bit;
    if (W.arrived > 0 && (W.mask & bit))
      msg = thread_name(tid) + " exited while its warp waits at " + op_name(W.op) + " at " + where(W.site) +
            " with mask " + hex(W.mask) + ", which includes it";
  }
  if (msg.empty()) {
    std::lock_guard<std::mutex> l(B.bar_mu);
    if (B.bar_arrived > 0)
      msg = thread_name(tid) + " exited while " + std::to_string(B.bar_arrived) +
            " thread(s) wait at __syncthreads() at " + where(B.bar_site) +
            ": a barrier must be reached by every thread of the block";
  }
  if (B.stalled.fetch_add(1, std::memory_order_relaxed) + 1 == B.n &&
      B.exited.load(std::memory_order_relaxed) < B.n && msg.empty())
    msg = "deadlock: " + thread_name(tid) + " exited and every other live thread waits" + B.state();
  if (!msg.empty() && !B.has_failed()) B.fail(msg);
}

// ---- the pool of OS threads that run a block's threads ----
struct Worker {
  std::mutex mu;
  std::condition_variable cv;
  const std::function<void(int)>* job = nullptr;
};

class Pool {
 public:
  void run_block(int n, const std::function<void(int)>& job) {
    while (int(workers_.size()) < n) {
      workers_.push_back(std::make_unique<Worker>());
      std::thread(&Pool::loop, this, int(workers_.size()) - 1, workers_.back().get()).detach();
    }
    done_.store(0, std::memory_order_relaxed);
    n_ = n;
    // each worker is handed the job under its own mutex: workers do not synchronise with each other
    for (int i = 0; i < n; ++i) {
      std::lock_guard<std::mutex> l(workers_[i]->mu);
      workers_[i]->job = &job;
      workers_[i]->cv.notify_one();
    }
    std::unique_lock<std::mutex> l(done_mu_);
    // Barrier waits time out on their own; this only fires for a thread that never returns
    // (an endless loop without barriers), which cannot be unwound: report and stop.
    if (!done_cv_.wait_for(l, 2 * timeout() + std::chrono::seconds(5),
                           [&] { return done_.load(std::memory_order_acquire) == n; })) {
      std::fprintf(stderr, "cuda_emu: a kernel thread did not finish within the timeout (endless loop?)%s\n",
                   g_block.state().c_str());
      std::abort();
    }
  }

 private:
  void loop(int id, Worker* w) {
    for (;;) {
      const std::function<void(int)>* job;
      {
        std::unique_lock<std::mutex> l(w->mu);
        w->cv.wait(l, [&] { return w->job != nullptr; });
        job = w->job;
        w->job = nullptr;
      }
      // n_ is read before this thread counts itself done: after that the launcher may set it
      // for the next block
      const int n = n_;
      (*job)(id);
      // release: the launcher (and through it the next block) sees everything this thread wrote
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n) {
        std::lock_guard<std::mutex> l(done_mu_);
        done_cv_.notify_one();
      }
    }
  }

  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex done_mu_;
  std::condition_variable done_cv_;
  std::atomic<int> done_{0};
  int n_ = 0;
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: its threads are detached and outlive main
  return *p;
}

std::mutex g_shared_mu;
std::vector<std::pair<void*, size_t>>& shared_regions() {
  static auto* v = new std::vector<std::pair<void*, size_t>>;
  return *v;
}
std::vector<unsigned char> g_dynamic_smem;

void poison_shared() {
  std::lock_guard<std::mutex> l(g_shared_mu);
  for (auto [p, n] : shared_regions()) std::memset(p, 0xff, n);
  if (!g_dynamic_smem.empty()) std::memset(g_dynamic_smem.data(), 0xff, g_dynamic_smem.size());
}

std::string dims(const Dim& d) {
  std::ostringstream os;
  os << "(" << d.x << ", " << d.y << ", " << d.z << ")";
  return os.str();
}

}  // namespace

std::string where(Site s) { return std::string(s.file) + ":" + std::to_string(s.line); }

SharedReg::SharedReg(void* p, size_t bytes) {
  std::lock_guard<std::mutex> l(g_shared_mu);
  std::memset(p, 0xff, bytes);
  shared_regions().emplace_back(p, bytes);
}

void* dynamic_smem() { return g_dynamic_smem.data(); }

void syncthreads(Site s) {
  Block& B = g_block;
  const int tid = linear_tid();
  std::unique_lock<std::mutex> l(B.bar_mu);
  if (B.has_failed()) throw Abort{};
  if (const int ex = B.exited.load(std::memory_order_relaxed))
    fail_here(l, B, "__syncthreads() at " + where(s) + " reached by " + thread_name(tid) + " after " +
                        std::to_string(ex) + " thread(s) of the block exited (first: " +
                        thread_name(B.first_exited.load(std::memory_order_relaxed)) +
                        "): a barrier must be reached by every thread of the block");
  if (B.bar_arrived == 0) {
    B.bar_site = s;
    B.bar_file.store(s.file, std::memory_order_relaxed);
    B.bar_line.store(s.line, std::memory_order_relaxed);
  } else if (!(B.bar_site == s)) {
    fail_here(l, B, "divergent __syncthreads(): " + thread_name(tid) + " at " + where(s) + ", " +
                        std::to_string(B.bar_arrived) + " other thread(s) at " + where(B.bar_site));
  }
  if (++B.bar_arrived == B.n) {
    B.bar_arrived = 0;
    ++B.bar_gen;
    B.bar_waiting.store(0, std::memory_order_relaxed);
    B.stalled.fetch_sub(B.n - 1, std::memory_order_relaxed);
    B.bar_cv.notify_all();
    return;
  }
  B.bar_waiting.store(B.bar_arrived, std::memory_order_relaxed);
  const uint64_t gen = B.bar_gen;
  B.wait(l, B.bar_cv, [&] { return B.bar_gen != gen; }, s);
}

void warp_exchange(Site s, WarpOp op, unsigned mask, const void* value, size_t bytes, int arg, int width, void* out,
                   unsigned* votes) {
  Block& B = g_block;
  const int tid = linear_tid(), lane = tid % 32;
  const unsigned bit = 1u << lane;
  Warp& W = *B.warps[tid / 32];
  std::unique_lock<std::mutex> l(W.mu);
  if (B.has_failed()) throw Abort{};
  const std::string call = std::string(op_name(op)) + " at " + where(s);
  if (width <= 0 || width > 32 || (width & (width - 1)))
    fail_here(l, B, call + ": width " + std::to_string(width) + " is not a power of 2 <= 32");
  if (!(mask & bit))
    fail_here(l, B, call + ": " + thread_name(tid) + " calls it with mask " + hex(mask) +
                        ", which excludes its own lane");
  if (mask & ~W.exists)
    fail_here(l, B, call + ": mask " + hex(mask) + " names lanes that do not exist in warp " +
                        std::to_string(tid / 32) + " (block of " + std::to_string(B.n) + " threads)");
  if (mask & W.exited)
    fail_here(l, B, call + ": mask " + hex(mask) + " names lanes that have exited (" + hex(mask & W.exited) + ")");
  if (W.arrived == 0) {
    W.site = s;
    W.mask = mask;
    W.op = op;
    W.site_file.store(s.file, std::memory_order_relaxed);
    W.site_line.store(s.line, std::memory_order_relaxed);
  } else if (!(W.site == s) || W.mask != mask || W.op != op) {
    fail_here(l, B, "divergent warp: " + thread_name(tid) + " at " + call + " with mask " + hex(mask) + ", " +
                        std::to_string(W.arrived) + " lane(s) of its warp at " + op_name(W.op) + " at " +
                        where(W.site) + " with mask " + hex(W.mask));
  }
  const int p = int(W.gen & 1);
  std::memcpy(W.slots[p][lane], value, bytes);
  const int need = std::popcount(mask);
  if (++W.arrived == need) {
    W.arrived = 0;
    ++W.gen;
    W.waiting.store(0, std::memory_order_relaxed);
    B.stalled.fetch_sub(need - 1, std::memory_order_relaxed);
    W.cv.notify_all();
  } else {
    W.waiting.store(W.arrived, std::memory_order_relaxed);
    const uint64_t gen = W.gen;
    B.wait(l, W.cv, [&] { return W.gen != gen; }, s);
  }
  int src = lane;
  const int seg = lane / width * width;
  switch (op) {
    case WarpOp::down: src = lane % width + arg < width ? lane + arg : lane; break;
    case WarpOp::up: src = lane % width - arg >= 0 ? lane - arg : lane; break;
    case WarpOp::xor_: src = (lane ^ arg) < seg + width ? (lane ^ arg) : lane; break;
    case WarpOp::idx: src = seg + ((arg % width) + width) % width; break;
    default: break;
  }
  if (src < 0 || src > 31 || !(mask & (1u << src)))
    fail_here(l, B, call + ": " + thread_name(tid) + " reads lane " + std::to_string(src) + ", which is not in mask " +
                        hex(mask) + " (the value would be undefined)");
  std::memcpy(out, W.slots[p][src], bytes);
  if (votes) {
    unsigned v = 0;
    for (int k = 0; k < 32; ++k)
      if ((mask >> k & 1u) && W.slots[p][k][0]) v |= 1u << k;
    *votes = v;
  }
}

void run(const LaunchInfo& info, const Config& cfg, const std::function<void()>& body) {
  std::lock_guard<std::mutex> launch_lock(g_launch_mu);  // one device, one kernel at a time
  const std::string head = std::string("cuda_emu: kernel ") + info.kernel + " launched at " + where(info.site) +
                           " with grid " + dims(cfg.grid) + ", block " + dims(cfg.block) + ": ";
  auto bad = [&](const std::string& why) { throw std::runtime_error(head + why); };
  const Dim& g = cfg.grid;
  const Dim& b = cfg.block;
  // the driver's checks (cudaErrorInvalidConfiguration and friends)
  if (g.x < 1 || g.y < 1 || g.z < 1) bad("invalid configuration argument (empty grid)");
  if (g.x > 2147483647LL || g.y > 65535 || g.z > 65535) bad("invalid configuration argument (grid too large)");
  if (b.x < 1 || b.y < 1 || b.z < 1 || b.x > 1024 || b.y > 1024 || b.z > 64 || b.x * b.y * b.z > 1024)
    bad("invalid configuration argument (block dimensions)");
  if (b.x * b.y * b.z > info.bounds)
    bad("too many resources requested for launch (" + std::to_string(b.x * b.y * b.z) +
        " threads > __launch_bounds__ " + std::to_string(info.bounds) + ")");
  if (cfg.smem < 0 || cfg.smem > 48 * 1024) bad("dynamic shared memory " + std::to_string(cfg.smem) + " > 48 KiB");
  const long long arg_limit = env_int("FASTGAN_EMU_ARG_LIMIT", 4096);
  if (static_cast<long long>(info.arg_bytes) > arg_limit)
    bad("kernel arguments take " + std::to_string(info.arg_bytes) + " bytes > " + std::to_string(arg_limit));

  const long long nblocks = g.x * g.y * g.z;
  std::vector<long long> order(nblocks);
  std::iota(order.begin(), order.end(), 0LL);
  std::string order_name = "forward";
  const char* env_order = std::getenv("FASTGAN_EMU_ORDER");
  const std::string o = env_order ? env_order : "forward";
  if (o == "reverse") {
    std::reverse(order.begin(), order.end());
    order_name = o;
  } else if (o.rfind("random", 0) == 0) {
    static std::atomic<unsigned long long> counter{0};
    const unsigned long long seed = o.size() > 7 ? std::stoull(o.substr(7)) : 12345ULL + counter++;
    std::mt19937_64 rng(seed);
    std::shuffle(order.begin(), order.end(), rng);
    order_name = "random:" + std::to_string(seed);
  } else if (o != "forward") {
    bad("FASTGAN_EMU_ORDER must be forward, reverse or random[:seed], got " + o);
  }

  g_dynamic_smem.assign(size_t(cfg.smem), 0xff);
  const int n = int(b.x * b.y * b.z);
  Block& B = g_block;
  for (long long lin : order) {
    const uint3 bi{unsigned(lin % g.x), unsigned(lin / g.x % g.y), unsigned(lin / (g.x * g.y))};
    B.reset(n, bi);
    poison_shared();
    const std::function<void(int)> job = [&](int tid) {
      threadIdx = uint3{unsigned(tid % b.x), unsigned(tid / b.x % b.y), unsigned(tid / (b.x * b.y))};
      blockIdx = bi;
      blockDim = dim3(unsigned(b.x), unsigned(b.y), unsigned(b.z));
      gridDim = dim3(unsigned(g.x), unsigned(g.y), unsigned(g.z));
      try {
        body();
      } catch (const Abort&) {
      } catch (const std::exception& e) {
        B.fail(thread_name(tid) + " threw: " + e.what());
      }
      thread_exit(tid);
    };
    pool().run_block(n, job);
    if (B.has_failed())
      bad("block (" + std::to_string(bi.x) + ", " + std::to_string(bi.y) + ", " + std::to_string(bi.z) +
          ") [block order " + order_name + "]: " + B.error);
  }
}

}  // namespace cuemu

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return 101;  // cudaErrorInvalidDevice: the emulator has one device
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = int(cuemu::env_int("FASTGAN_EMU_SMS", 132)); return cudaSuccess;
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; return cudaSuccess;
  }
  return 1;
}
cudaError_t cudaGetLastError() { return cudaSuccess; }
const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "cuda_emu error"; }
