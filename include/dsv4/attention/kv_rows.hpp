#pragma once
// Rows of one width in one RowFormat: the storage of a cache's kv ring, compressed entries and
// indexer keys. A growing store holds its rows in pages of a fixed row count, so appending never
// moves or copies what is already stored and never holds more than one partly used page; a ring
// is one page of exactly its row count. allocated_bytes() is the formula the allocation follows,
// so the cache's size can be predicted from the config alone (model/cache_bytes.hpp).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "dsv4/numeric/row_codec.hpp"

namespace dsv4 {

class KvRows {
 public:
  // Rows per page of a growing store: about 64 KiB per page, a power of two, at least 16 rows.
  static int64_t page_rows_for(const RowCodec& codec) {
    int64_t r = 16;
    while (r * 2 * codec.row_bytes() <= (int64_t(64) << 10)) r *= 2;
    return r;
  }
  // The bytes a growing store of `rows` rows allocates (whole pages).
  static int64_t allocated_bytes(const RowCodec& codec, int64_t rows) {
    const int64_t pr = page_rows_for(codec);
    return (rows + pr - 1) / pr * pr * codec.row_bytes();
  }

  // A growing store, empty.
  void init_growing(const RowCodec& codec) {
    codec_ = codec, rb_ = codec.row_bytes(), page_rows_ = page_rows_for(codec), fixed_ = false;
    pages_.clear(), rows_ = 0;
  }
  // A ring of exactly `rows` rows, all zero (decoding to 0.0 in every format).
  void init_ring(const RowCodec& codec, int64_t rows) {
    codec_ = codec, rb_ = codec.row_bytes(), page_rows_ = std::max<int64_t>(rows, 1), fixed_ = true;
    pages_.clear(), rows_ = rows;
    if (rows > 0) pages_.push_back(std::make_unique<uint8_t[]>(size_t(rows * rb_)));  // value-initialized: zero
  }

  const RowCodec& codec() const { return codec_; }
  int64_t size() const { return rows_; }
  int64_t row_bytes() const { return rb_; }
  int64_t page_rows() const { return page_rows_; }
  int64_t num_pages() const { return int64_t(pages_.size()); }
  // Rows stored in page p (all but the last page of a growing store are full).
  int64_t rows_in_page(int64_t p) const { return std::min(page_rows_, rows_ - p * page_rows_); }
  const uint8_t* page(int64_t p) const { return pages_[size_t(p)].get(); }
  uint8_t* page(int64_t p) { return pages_[size_t(p)].get(); }
  // What the values occupy, and what is allocated for them.
  int64_t value_bytes() const { return rows_ * rb_; }
  int64_t allocated() const { return num_pages() * page_rows_ * rb_; }

  const uint8_t* row(int64_t i) const { return pages_[size_t(i / page_rows_)].get() + (i % page_rows_) * rb_; }
  uint8_t* row(int64_t i) { return pages_[size_t(i / page_rows_)].get() + (i % page_rows_) * rb_; }
  // The row as floats: in place for F32 storage, else decoded into `scratch` [width].
  const float* floats(int64_t i, float* scratch) const {
    if (codec_.format == RowFormat::F32) return reinterpret_cast<const float*>(row(i));
    codec_.decode(row(i), scratch);
    return scratch;
  }
  void decode(int64_t i, float* out) const { codec_.decode(row(i), out); }
  // Every row decoded, back to back: [size, width].
  std::vector<float> to_floats() const {
    std::vector<float> out(size_t(rows_ * codec_.width));
    for (int64_t i = 0; i < rows_; ++i) decode(i, &out[size_t(i * codec_.width)]);
    return out;
  }

  void set(int64_t i, const float* x /*[width]*/) { codec_.encode(x, row(i)); }
  void append(const float* x /*[width]*/) { codec_.encode(x, grow()); }
  // Restoring a saved store: n rows of raw bytes [n, row_bytes].
  void append_raw(const uint8_t* bytes, int64_t n) {
    for (int64_t k = 0; k < n; ++k) std::copy_n(bytes + k * rb_, rb_, grow());
  }

  KvRows() = default;
  KvRows(const KvRows& o) { *this = o; }
  KvRows& operator=(const KvRows& o) {  // sessions copy caches to fork a sequence
    if (this == &o) return *this;
    codec_ = o.codec_, rb_ = o.rb_, page_rows_ = o.page_rows_, fixed_ = o.fixed_, rows_ = o.rows_;
    pages_.clear();
    for (int64_t p = 0; p < o.num_pages(); ++p) {
      pages_.push_back(std::make_unique_for_overwrite<uint8_t[]>(size_t(page_rows_ * rb_)));
      std::copy_n(o.page(p), size_t(page_rows_ * rb_), pages_.back().get());
    }
    return *this;
  }
  KvRows(KvRows&&) noexcept = default;
  KvRows& operator=(KvRows&&) noexcept = default;

 private:
  // One more row at the end (a new page when the last is full); returns where it goes.
  uint8_t* grow() {
    if (fixed_) fail("cache: append to a ring");
    if (rows_ == num_pages() * page_rows_) pages_.push_back(std::make_unique_for_overwrite<uint8_t[]>(size_t(page_rows_ * rb_)));
    return row(rows_++);
  }

  RowCodec codec_;
  int64_t rb_ = 0, page_rows_ = 1, rows_ = 0;
  bool fixed_ = false;
  std::vector<std::unique_ptr<uint8_t[]>> pages_;
};

}  // namespace dsv4
