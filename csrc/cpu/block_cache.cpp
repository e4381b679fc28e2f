#include "block_cache.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <torch/library.h>

#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace fastgan {
namespace {

// Below this, glibc's own bins reuse memory without faults.
constexpr size_t kMinBytes = size_t(256) << 10;

struct Block {
  void* ptr;
  size_t bytes;
};

class BlockCache final : public c10::Allocator {
 public:
  BlockCache() {
    const char* env = std::getenv("FASTGAN_CPU_CACHE_MB");
    limit_ = (env ? size_t(std::strtoull(env, nullptr, 10)) : size_t(256)) << 20;
  }

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinBytes || limit_ == 0) return c10::GetCPUAllocator()->allocate(n);
    Block* b = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(n);
      if (it != free_.end() && !it->second.empty()) {
        b = it->second.back();
        it->second.pop_back();
        cached_ -= n;
      }
    }
    if (b == nullptr) b = new Block{c10::alloc_cpu(n), n};
    return {b->ptr, b, &BlockCache::release, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Returns every cached block to the system; (bytes, blocks) before.
  std::vector<int64_t> clear() {
    std::unordered_map<size_t, std::vector<Block*>> gone;
    std::vector<int64_t> before;
    {
      std::lock_guard<std::mutex> lock(mu_);
      before = stats_locked();
      gone.swap(free_);
      cached_ = 0;
    }
    for (auto& [n, blocks] : gone)
      for (Block* b : blocks) destroy(b);
    return before;
  }

  std::vector<int64_t> stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_locked();
  }

  static BlockCache& get() {
    // Leaked on purpose: tensors freed during interpreter shutdown still call release().
    static BlockCache* cache = new BlockCache();
    return *cache;
  }

 private:
  static void release(void* ctx) {
    auto* b = static_cast<Block*>(ctx);
    BlockCache& c = get();
    {
      std::lock_guard<std::mutex> lock(c.mu_);
      if (c.cached_ + b->bytes <= c.limit_) {
        c.free_[b->bytes].push_back(b);
        c.cached_ += b->bytes;
        return;
      }
    }
    destroy(b);
  }

  static void destroy(Block* b) {
    c10::free_cpu(b->ptr);
    delete b;
  }

  std::vector<int64_t> stats_locked() const {
    int64_t blocks = 0;
    for (auto& [n, v] : free_) blocks += int64_t(v.size());
    return {int64_t(cached_), blocks, int64_t(limit_)};
  }

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<Block*>> free_;
  size_t cached_ = 0;
  size_t limit_ = 0;
};

std::vector<int64_t> cpu_cache_stats() { return BlockCache::get().stats(); }
std::vector<int64_t> cpu_cache_clear() { return BlockCache::get().clear(); }

}  // namespace

at::Tensor cpu_empty_strided_cached(at::IntArrayRef sizes, at::IntArrayRef strides, at::ScalarType dtype) {
  return at::detail::empty_strided_generic(sizes, strides, &BlockCache::get(),
                                           c10::DispatchKeySet(c10::DispatchKey::CPU), dtype);
}

// No tensor arguments: the kernel must be reachable from any dispatch key.
TORCH_LIBRARY_IMPL(fastgan, CompositeImplicitAutograd, m) {
  m.impl("cpu_cache_stats", &cpu_cache_stats);
  m.impl("cpu_cache_clear", &cpu_cache_clear);
}

}  // namespace fastgan
