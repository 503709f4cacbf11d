#pragma once
// Byte-level BPE on raw bytes: a piece starts as one symbol per byte (its byte token's id) and
// the adjacent pair with the lowest merge rank is merged, leftmost first on ties, until no pair has
// a merge — the order HF tokenizers' priority queue produces. Everything works on ids: a merge is
// (left id, right id) → (rank, merged id), so no strings are built while encoding.
#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace dsv4::text {

// Transparent hash so maps keyed by std::string can be searched with a string_view.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
template <class V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

// Open-addressing hash map (left id, right id) → (rank, merged id): ~128k merges are looked up
// several times per piece, and std::unordered_map's node chasing showed up in profiles.
class MergeTable {
 public:
  struct Merge {
    int32_t rank;
    int32_t id;
  };

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    rehash(cap);
  }

  // A later merge of the same pair replaces the earlier one (HF collects merges into a map).
  void insert(int32_t left, int32_t right, Merge m) {
    if ((size_ + 1) * 2 > slots_.size()) rehash(std::max<size_t>(16, slots_.size() * 2));
    const uint64_t key = pack(left, right);
    size_t i = slot_of(key);
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    if (slots_[i].key == kEmpty) ++size_;
    slots_[i] = {key, m};
  }

  const Merge* find(int32_t left, int32_t right) const {
    if (slots_.empty()) return nullptr;
    const uint64_t key = pack(left, right);
    for (size_t i = slot_of(key);; i = (i + 1) & mask_) {
      if (slots_[i].key == key) return &slots_[i].merge;
      if (slots_[i].key == kEmpty) return nullptr;
    }
  }

  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};  // ids are >= 0, so never a real key
  struct Slot {
    uint64_t key = kEmpty;
    Merge merge{};
  };
  static uint64_t pack(int32_t l, int32_t r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }
  size_t slot_of(uint64_t key) const {
    key *= 0x9E3779B97F4A7C15ull;  // Fibonacci hashing: the high bits are well mixed
    return size_t(key >> 32) & mask_;
  }
  void rehash(size_t cap) {
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{});
    mask_ = cap - 1;
    size_ = 0;
    for (const Slot& s : old) {
      if (s.key != kEmpty) insert(int32_t(s.key >> 32), int32_t(uint32_t(s.key)), s.merge);
    }
  }

  std::vector<Slot> slots_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

namespace bpe_detail {

// O(n^2) in the worst case but branch-light and allocation-free: the right choice for the short
// pieces that make up almost all text. rank[i] caches the merge of (sym[i], sym[i+1]).
inline void merge_scan(const MergeTable& merges, std::vector<int32_t>& sym) {
  thread_local std::vector<int32_t> rank, merged;
  const size_t n0 = sym.size();
  rank.resize(n0);
  merged.resize(n0);
  auto refresh = [&](size_t i) {
    const MergeTable::Merge* m = merges.find(sym[i], sym[i + 1]);
    rank[i] = m ? m->rank : INT32_MAX;
    merged[i] = m ? m->id : -1;
  };
  for (size_t i = 0; i + 1 < n0; ++i) refresh(i);
  size_t n = n0;
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i) {
      if (rank[i] < rank[best]) best = i;  // strict: leftmost wins ties
    }
    if (rank[best] == INT32_MAX) break;
    sym[best] = merged[best];
    const auto first = static_cast<std::ptrdiff_t>(best + 1);
    sym.erase(sym.begin() + first);
    rank.erase(rank.begin() + first);
    merged.erase(merged.begin() + first);
    --n;
    if (best + 1 < n)
      refresh(best);
    else
      rank[best] = INT32_MAX;
    if (best > 0) refresh(best - 1);
  }
}

// O(n log n): a heap of candidate merges over a linked list of symbols, for long pieces (a long
// run of letters is one piece). Stale entries are skipped when popped, as in HF.
inline void merge_heap(const MergeTable& merges, std::vector<int32_t>& sym) {
  struct Cand {
    int32_t rank;
    int32_t pos;
    int32_t id;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  const auto n = static_cast<int32_t>(sym.size());
  thread_local std::vector<int32_t> prev, next;
  thread_local std::vector<uint8_t> alive;
  thread_local std::vector<Cand> heap;
  prev.resize(sym.size());
  next.resize(sym.size());
  alive.assign(sym.size(), 1);
  heap.clear();
  auto push = [&](int32_t pos) {
    const int32_t nx = next[size_t(pos)];
    if (nx < 0) return;
    if (const MergeTable::Merge* m = merges.find(sym[size_t(pos)], sym[size_t(nx)])) {
      heap.push_back({m->rank, pos, m->id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>{});
    }
  };
  for (int32_t i = 0; i < n; ++i) {
    prev[size_t(i)] = i - 1;
    next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  }
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Cand c = heap.back();
    heap.pop_back();
    const auto p = size_t(c.pos);
    if (!alive[p] || next[p] < 0) continue;
    const auto nx = size_t(next[p]);
    const MergeTable::Merge* m = merges.find(sym[p], sym[nx]);
    if (!m || m->id != c.id) continue;  // the pair changed since this entry was pushed
    sym[p] = c.id;
    alive[nx] = 0;
    next[p] = next[nx];
    if (next[nx] >= 0) prev[size_t(next[nx])] = c.pos;
    if (prev[p] >= 0) push(prev[p]);
    push(c.pos);
  }
  size_t w = 0;
  for (size_t i = 0; i < size_t(n); ++i) {
    if (alive[i]) sym[w++] = sym[i];
  }
  sym.resize(w);
}

}  // namespace bpe_detail

// Per-thread, direct-mapped memo of piece → ids. Allocation-free and lock-free: a miss costs a
// hash and a 64-byte store, where a std::unordered_map cache cost more on misses (malloc, rehash,
// locking) than the BPE it saved on text with few repeated words. Entries are tagged with the
// owning Bpe's serial number, so tokenizers sharing a thread never see each other's results.
class BpeCache {
 public:
  static constexpr size_t kMaxKey = 18, kMaxIds = 8, kSlots = 4096;

  static bool cacheable(std::string_view piece) { return piece.size() >= 3 && piece.size() <= kMaxKey; }

  // Appends the cached ids of `piece` to `out`; false on a miss.
  static bool lookup(uint32_t owner, uint64_t hash, std::string_view piece, std::vector<int32_t>& out) {
    const Slot& s = slots()[hash & (kSlots - 1)];
    if (s.hash != hash || s.owner != owner || s.len != piece.size() ||
        std::memcmp(s.key, piece.data(), piece.size()) != 0) {
      return false;
    }
    out.insert(out.end(), s.ids, s.ids + s.n);
    return true;
  }

  static void store(uint32_t owner, uint64_t hash, std::string_view piece, std::span<const int32_t> ids) {
    if (ids.size() > kMaxIds) return;
    Slot& s = slots()[hash & (kSlots - 1)];
    s.hash = hash;
    s.owner = owner;
    s.len = static_cast<uint8_t>(piece.size());
    s.n = static_cast<uint8_t>(ids.size());
    std::memcpy(s.key, piece.data(), piece.size());
    std::copy(ids.begin(), ids.end(), s.ids);
  }

  static uint32_t new_owner() {
    static std::atomic<uint32_t> next{1};
    return next.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t owner = 0;  // 0: empty (owners start at 1)
    uint8_t len = 0, n = 0;
    char key[kMaxKey];
    int32_t ids[kMaxIds];
  };
  static_assert(sizeof(Slot) == 64);

  static Slot* slots() {
    thread_local std::unique_ptr<Slot[]> table(new Slot[kSlots]);
    return table.get();
  }
};

class Bpe {
 public:
  // Pieces longer than this use the heap merge, shorter ones the scan: the two cost the same at
  // about 48-64 bytes (measured on Latin and CJK pieces with the DeepSeek merges).
  static constexpr size_t kScanMax = 48;

  // byte_ids[b]: id of the token for byte b. bytes_to_id: whole-token lookup, used (and needed)
  // only with ignore_merges (a piece that is a vocab token is emitted as is, skipping merges).
  Bpe(std::array<int32_t, 256> byte_ids, MergeTable merges, bool ignore_merges, StringMap<int32_t> bytes_to_id)
      : byte_ids_(byte_ids),
        merges_(std::move(merges)),
        ignore_merges_(ignore_merges),
        bytes_to_id_(std::move(bytes_to_id)) {}

  Bpe(const Bpe&) = delete;
  Bpe& operator=(const Bpe&) = delete;

  const MergeTable& merges() const { return merges_; }

  // Appends the ids of one piece (raw bytes, non-empty). Thread-safe.
  void encode_piece(std::string_view piece, std::vector<int32_t>& out) const {
    if (piece.size() == 1) {
      out.push_back(byte_ids_[static_cast<uint8_t>(piece[0])]);
      return;
    }
    if (ignore_merges_) {
      if (auto it = bytes_to_id_.find(piece); it != bytes_to_id_.end()) {
        out.push_back(it->second);
        return;
      }
    }
    const bool cacheable = BpeCache::cacheable(piece);
    const uint64_t hash = cacheable ? std::hash<std::string_view>{}(piece) : 0;
    if (cacheable && BpeCache::lookup(cache_owner_, hash, piece, out)) return;
    thread_local std::vector<int32_t> sym;
    sym.resize(piece.size());
    for (size_t i = 0; i < piece.size(); ++i) sym[i] = byte_ids_[static_cast<uint8_t>(piece[i])];
    if (piece.size() <= kScanMax) {
      bpe_detail::merge_scan(merges_, sym);
    } else {
      bpe_detail::merge_heap(merges_, sym);
    }
    out.insert(out.end(), sym.begin(), sym.end());
    if (cacheable) BpeCache::store(cache_owner_, hash, piece, sym);
  }

 private:
  std::array<int32_t, 256> byte_ids_;
  MergeTable merges_;
  bool ignore_merges_;
  StringMap<int32_t> bytes_to_id_;
  uint32_t cache_owner_ = BpeCache::new_owner();
};

}  // namespace dsv4::text
