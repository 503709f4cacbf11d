#pragma once
// DeepSeek V3/V4 tokenizer: a HuggingFace tokenizer.json with byte-level BPE. Pipeline of encode():
//   added/special tokens cut out (added_tokens.hpp) → each remaining text run pre-tokenized by the
//   Split regexes (pretokenizer.hpp, PCRE2) → each piece merged by BPE on raw bytes (bpe.hpp).
// What the loader accepts is exactly what such files use; anything else is refused at load with a
// message naming the file and key, rather than tokenized differently from HF. See docs/tokenizer.md.
// Link with -lpcre2-8; needs nlohmann/json.
#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dsv4/core/error.hpp"
#include "dsv4/text/added_tokens.hpp"
#include "dsv4/text/bpe.hpp"
#include "dsv4/text/byte_level.hpp"
#include "dsv4/text/pretokenizer.hpp"
#include "dsv4/text/utf8.hpp"

namespace dsv4::text {

namespace tokenizer_detail {

// A JSON node with the file and dotted key path that error messages name.
struct Node {
  const nlohmann::json& j;
  const std::string& file;
  std::string path;

  [[noreturn]] void bad(std::string_view what) const { fail(file, ": key '", path, "' ", what); }
  std::string child_path(std::string_view key) const {
    std::string p = path;  // no ostringstream: this runs for every merge
    if (!p.empty()) p += '.';
    p += key;
    return p;
  }
  bool is_null() const { return j.is_null(); }
  // Child `key`, or nullopt when missing or null.
  std::optional<Node> get(std::string_view key) const {
    if (!j.is_object()) bad("must be an object");
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    return Node{*it, file, child_path(key)};
  }
  Node at(std::string_view key) const {
    auto n = get(key);
    if (!n) Node{j, file, child_path(key)}.bad("is missing");
    return *n;
  }
  Node at(size_t i) const { return Node{j[i], file, path + '[' + std::to_string(i) + ']'}; }
  size_t size() const {
    if (!j.is_array()) bad("must be an array");
    return j.size();
  }
  std::string str() const {
    if (!j.is_string()) bad("must be a string");
    return j.get<std::string>();
  }
  bool boolean() const {
    if (!j.is_boolean()) bad("must be true or false");
    return j.get<bool>();
  }
  bool boolean(std::string_view key, bool def) const {
    auto n = get(key);
    return n ? n->boolean() : def;
  }
  int32_t id() const {
    if (!j.is_number_integer()) bad("must be an integer token id");
    const auto v = j.get<int64_t>();
    // Ids index dense tables; the bound keeps a hostile file from asking for gigabytes.
    if (v < 0 || v >= (int64_t{1} << 24)) bad(cat("holds id ", v, ", outside [0, 2^24)"));
    return static_cast<int32_t>(v);
  }
  std::string type() const { return at("type").str(); }
};

inline nlohmann::json parse(std::string_view text, const std::string& file) {
  try {
    return nlohmann::json::parse(text.begin(), text.end());
  } catch (const nlohmann::json::exception& e) {
    fail(file, ": malformed JSON (", e.what(), ")");
  }
}

inline std::string read_file(const std::filesystem::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail(p.string(), ": cannot open");
  std::ostringstream s;
  s << f.rdbuf();
  if (f.bad()) fail(p.string(), ": read error");
  return std::move(s).str();
}

// The identity is the only normalizer accepted: the added-token passes and the regexes assume
// the text is not rewritten.
inline void check_normalizer(const Node& n) {
  const std::string t = n.type();
  if (t != "Sequence") n.at("type").bad(cat("is '", t, "': only an empty Sequence normalizer (or null) is supported"));
  const Node list = n.at("normalizers");
  for (size_t i = 0; i < list.size(); ++i) check_normalizer(list.at(i));
}

inline SplitBehavior split_behavior(const Node& n) {
  const std::string b = n.str();
  if (b == "Isolated") return SplitBehavior::kIsolated;
  if (b == "Removed") return SplitBehavior::kRemoved;
  if (b == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (b == "Contiguous") return SplitBehavior::kContiguous;
  n.bad(cat("is '", b, "', not a known Split behavior"));
}

// Appends the steps of pre-tokenizer `n`; sets `byte_level` when a ByteLevel step is seen.
inline void add_pre_tokenizer(const Node& n, PreTokenizer& pre, bool& byte_level) {
  const std::string t = n.type();
  if (byte_level) n.bad("comes after the ByteLevel step, which must be last");
  if (t == "Sequence") {
    const Node list = n.at("pretokenizers");
    for (size_t i = 0; i < list.size(); ++i) add_pre_tokenizer(list.at(i), pre, byte_level);
  } else if (t == "Split") {
    const Node pat = n.at("pattern");
    SplitStep step{std::string(), split_behavior(n.at("behavior")), n.boolean("invert", false)};
    if (auto re = pat.get("Regex")) {
      step.pattern.emplace<Regex>(re->str(), cat(n.file, ": key '", re->path, "'"));
    } else if (auto lit = pat.get("String")) {
      step.pattern = lit->str();
    } else {
      pat.bad("must hold \"Regex\" or \"String\"");
    }
    pre.add(std::move(step));
  } else if (t == "ByteLevel") {
    if (n.boolean("add_prefix_space", false)) n.at("add_prefix_space").bad("is true, which is not supported");
    if (n.boolean("use_regex", true)) {
      pre.add(SplitStep{Regex(kByteLevelRegex, "ByteLevel regex"), SplitBehavior::kIsolated, false});
    }
    byte_level = true;
  } else {
    n.at("type").bad(cat("is '", t, "', not a supported pre-tokenizer (Sequence, Split, ByteLevel)"));
  }
}

inline void check_decoder(const Node& n) {
  const std::string t = n.type();
  if (t == "Sequence") {
    const Node list = n.at("decoders");
    if (list.size() == 0) list.bad("is empty");
    for (size_t i = 0; i < list.size(); ++i) check_decoder(list.at(i));
  } else if (t != "ByteLevel") {
    n.at("type").bad(cat("is '", t, "': only the ByteLevel decoder is supported"));
  }
}

// Ids a post-processor adds around a single sequence (TemplateProcessing only; ByteLevel adds none).
struct Template {
  bool present = false;
  std::vector<int32_t> prefix, suffix;
};

inline void read_post_processor(const Node& n, Template& tpl) {
  const std::string t = n.type();
  if (t == "ByteLevel") return;
  if (t == "Sequence") {
    const Node list = n.at("processors");
    for (size_t i = 0; i < list.size(); ++i) read_post_processor(list.at(i), tpl);
    return;
  }
  if (t != "TemplateProcessing") {
    n.at("type").bad(cat("is '", t, "': only ByteLevel, TemplateProcessing and Sequence are supported"));
  }
  tpl = Template{true, {}, {}};
  const Node single = n.at("single");
  const Node specials = n.at("special_tokens");
  bool seen_sequence = false;
  for (size_t i = 0; i < single.size(); ++i) {
    const Node item = single.at(i);
    if (item.get("Sequence")) {
      seen_sequence = true;
    } else if (auto sp = item.get("SpecialToken")) {
      const Node ids = specials.at(sp->at("id").str()).at("ids");
      for (size_t k = 0; k < ids.size(); ++k) (seen_sequence ? tpl.suffix : tpl.prefix).push_back(ids.at(k).id());
    } else {
      item.bad("must hold \"Sequence\" or \"SpecialToken\"");
    }
  }
}

// Names a BOS/EOS-like token has in common tokenizers; used only without tokenizer_config.json.
inline constexpr std::array<std::string_view, 3> kBosNames = {"<｜begin▁of▁sentence｜>", "<s>", "<|begin_of_text|>"};
inline constexpr std::array<std::string_view, 4> kEosNames = {"<｜end▁of▁sentence｜>", "</s>", "<|end_of_text|>",
                                                              "<|endoftext|>"};

}  // namespace tokenizer_detail

class Tokenizer {
 public:
  // Reads dir/tokenizer.json and, when present, dir/tokenizer_config.json (bos/eos, add_bos_token,
  // chat_template). Throws dsv4::Error (a std::runtime_error) naming the file and key at fault.
  static Tokenizer load(const std::filesystem::path& dir) {
    const auto tok_path = dir / "tokenizer.json";
    const auto cfg_path = dir / "tokenizer_config.json";
    const std::string tok = tokenizer_detail::read_file(tok_path);
    std::string cfg;
    std::error_code ec;
    const bool has_cfg = std::filesystem::exists(cfg_path, ec);
    if (has_cfg) cfg = tokenizer_detail::read_file(cfg_path);
    return Tokenizer(tok, tok_path.string(), has_cfg ? std::optional<std::string_view>(cfg) : std::nullopt,
                     cfg_path.string());
  }

  // Same from in-memory text; an empty config means none (bos/eos then guessed from common names).
  static Tokenizer from_json_text(std::string_view tokenizer_json, std::string_view tokenizer_config_json = {}) {
    return Tokenizer(tokenizer_json, "tokenizer.json",
                     tokenizer_config_json.empty() ? std::nullopt : std::optional(tokenizer_config_json),
                     "tokenizer_config.json");
  }

  // utf8: any bytes. Returns ids in [0, vocab_size()). Added tokens in the text (special or not,
  // e.g. "<｜User｜>") become their ids, as HF does by default. Bytes that are not valid UTF-8 are
  // each encoded as their own byte token (HF only takes valid UTF-8; decode_bytes() gives them
  // back). add_special_tokens_like_bos: add BOS/EOS as tokenizer_config.json's add_bos_token /
  // add_eos_token say (else the post-processor's template, else BOS when known).
  std::vector<int32_t> encode(std::string_view utf8, bool add_special_tokens_like_bos = false) const {
    std::vector<int32_t> out;
    encode_into(utf8, out, add_special_tokens_like_bos);
    return out;
  }

  // Appends to `out` (reuses its capacity); otherwise as encode().
  void encode_into(std::string_view utf8, std::vector<int32_t>& out, bool add_special_tokens_like_bos = false) const {
    const Impl& m = *impl_;
    if (add_special_tokens_like_bos) out.insert(out.end(), m.prefix.begin(), m.prefix.end());
    thread_local std::vector<Segment> segments;
    m.added.split(utf8, segments);
    for (const Segment& s : segments) {
      if (s.id >= 0) {
        out.push_back(s.id);
      } else {
        encode_text(utf8.substr(s.begin, s.end - s.begin), out);
      }
    }
    if (add_special_tokens_like_bos) out.insert(out.end(), m.suffix.begin(), m.suffix.end());
  }

  // ids: each in [0, vocab_size()), else dsv4::Error naming it. Returns valid UTF-8: byte
  // sequences that are not (e.g. a cut-off character) become U+FFFD, as HF does.
  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const {
    return utf8::lossy(decode_bytes(ids, skip_special));
  }

  // As decode() but the raw bytes, not repaired (a partial character stays partial).
  std::string decode_bytes(std::span<const int32_t> ids, bool skip_special = false) const {
    std::string out;
    for (int32_t id : ids) {
      if (skip_special && is_special(id)) continue;
      out.append(token_bytes(id));
    }
    return out;
  }

  // The bytes one id decodes to: vocab tokens mapped back from the byte-level alphabet, added
  // tokens as written. Throws for an unknown id.
  std::string_view token_bytes(int32_t id) const {
    check_id(id);
    const Impl& m = *impl_;
    return std::string_view(m.bytes_pool)
        .substr(m.bytes_off[size_t(id)], m.bytes_off[size_t(id) + 1] - m.bytes_off[size_t(id)]);
  }

  // The token as tokenizer.json writes it (byte-level alphabet, e.g. "Ġthe"). Throws for an unknown id.
  std::string_view token_text(int32_t id) const {
    check_id(id);
    const Impl& m = *impl_;
    return std::string_view(m.text_pool)
        .substr(m.text_off[size_t(id)], m.text_off[size_t(id) + 1] - m.text_off[size_t(id)]);
  }

  // Inverse of token_text(); added tokens take precedence, as in HF.
  std::optional<int32_t> token_id(std::string_view token) const {
    const auto& map = impl_->token_to_id;
    if (auto it = map.find(token); it != map.end()) return it->second;
    return std::nullopt;
  }

  // One past the largest id (model vocab and added tokens): 128815 for DeepSeek V3.
  int32_t vocab_size() const { return static_cast<int32_t>(impl_->flags.size()); }
  bool is_special(int32_t id) const {
    check_id(id);
    return impl_->flags[size_t(id)] & kSpecial;
  }
  std::optional<int32_t> bos_id() const { return impl_->bos; }
  std::optional<int32_t> eos_id() const { return impl_->eos; }
  const std::optional<std::string>& chat_template() const { return impl_->chat_template; }
  const std::vector<AddedToken>& added_tokens() const { return impl_->added.tokens(); }

 private:
  static constexpr uint8_t kPresent = 1, kSpecial = 2;

  struct Impl {
    PreTokenizer pre;
    std::unique_ptr<Bpe> bpe;
    AddedTokenMatcher added;
    std::array<int32_t, 256> byte_ids{};
    std::vector<uint8_t> flags;  // per id: kPresent | kSpecial
    std::string text_pool, bytes_pool;
    std::vector<uint32_t> text_off, bytes_off;  // id → [off[id], off[id + 1]) in the pool
    StringMap<int32_t> token_to_id;
    std::optional<int32_t> bos, eos;
    std::vector<int32_t> prefix, suffix;
    std::optional<std::string> chat_template;
  };

  Tokenizer(std::string_view json_text, const std::string& file, std::optional<std::string_view> cfg_text,
            const std::string& cfg_file)
      : impl_(build(json_text, file, cfg_text, cfg_file)) {}

  void check_id(int32_t id) const {
    if (id < 0 || id >= vocab_size() || !(impl_->flags[size_t(id)] & kPresent)) {
      fail("token id ", id, " is not in the vocabulary (size ", vocab_size(), ")");
    }
  }

  // A run of text with no added tokens: valid UTF-8 runs through the regexes and BPE; each invalid
  // byte becomes its byte token (the regexes are compiled for valid UTF-8 only).
  void encode_text(std::string_view s, std::vector<int32_t>& out) const {
    const Impl& m = *impl_;
    thread_local std::vector<Span> pieces;
    size_t i = 0;
    while (i < s.size()) {
      const size_t ok = utf8::valid_prefix(s.substr(i));
      if (ok > 0) {
        const std::string_view run = s.substr(i, ok);
        m.pre.run(run, pieces);
        for (const Span& p : pieces) m.bpe->encode_piece(run.substr(p.begin, p.end - p.begin), out);
        i += ok;
      }
      if (i < s.size()) {
        const size_t bad = utf8::scan(s, i).len;
        for (size_t k = 0; k < bad; ++k) out.push_back(m.byte_ids[static_cast<uint8_t>(s[i + k])]);
        i += bad;
      }
    }
  }

  static std::shared_ptr<const Impl> build(std::string_view json_text, const std::string& file,
                                           std::optional<std::string_view> cfg_text, const std::string& cfg_file) {
    using tokenizer_detail::Node;
    auto m = std::make_shared<Impl>();
    const nlohmann::json j = tokenizer_detail::parse(json_text, file);
    const Node root{j, file, ""};
    if (!j.is_object()) root.bad("(the top level) must be an object");

    if (auto n = root.get("normalizer")) tokenizer_detail::check_normalizer(*n);

    bool byte_level = false;
    if (auto n = root.get("pre_tokenizer")) tokenizer_detail::add_pre_tokenizer(*n, m->pre, byte_level);
    if (!byte_level) Node{j, file, "pre_tokenizer"}.bad("has no ByteLevel step; only byte-level BPE is supported");

    if (auto n = root.get("decoder")) {
      tokenizer_detail::check_decoder(*n);
    } else {
      root.at("decoder").bad("is missing; ByteLevel is required");
    }

    const Node model = root.at("model");
    if (auto t = model.get("type"); t && t->str() != "BPE") t->bad(cat("is '", t->str(), "', not BPE"));
    if (auto d = model.get("dropout"); d && !(d->j.is_number() && d->j.get<double>() == 0.0)) {
      d->bad("is set; BPE dropout is not supported");
    }
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"}) {
      if (auto v = model.get(k); v && !v->str().empty()) v->bad("is set, which byte-level BPE does not use");
    }

    // Vocab. Strings point into `j`, which outlives their use here.
    const Node vocab = model.at("vocab");
    if (!vocab.j.is_object()) vocab.bad("must be an object of token → id");
    if (vocab.j.empty()) vocab.bad("is empty");
    std::vector<std::pair<int32_t, const std::string*>> by_id;
    by_id.reserve(vocab.j.size());
    int32_t max_id = -1;
    for (auto it = vocab.j.begin(); it != vocab.j.end(); ++it) {
      // A Node (whose path costs an allocation) only when the value is wrong.
      const int64_t v = it.value().is_number_integer() ? it.value().get<int64_t>() : -1;
      const int32_t id = (v >= 0 && v < (int64_t{1} << 24)) ? static_cast<int32_t>(v)
                                                            : Node{it.value(), file, "model.vocab." + it.key()}.id();
      by_id.emplace_back(id, &it.key());
      max_id = std::max(max_id, id);
    }
    m->token_to_id.reserve(by_id.size() + 1024);
    for (const auto& [id, tok] : by_id) m->token_to_id.emplace(*tok, id);
    for (int b = 0; b < 256; ++b) {
      const std::string ch = byte_level::encode(std::string(1, static_cast<char>(b)));
      auto it = m->token_to_id.find(ch);
      if (it == m->token_to_id.end())
        vocab.bad(cat("has no token for byte ", b, " ('", ch, "'), which byte-level BPE needs"));
      m->byte_ids[size_t(b)] = it->second;
    }

    // Added tokens. HF ignores the ids written here: a token gets the id its text already has (in
    // the vocab or as an earlier added token), else the next id after the vocab. A file that
    // disagrees was edited by hand; refuse it rather than pick one of the two numberings.
    std::vector<AddedToken> added;
    if (auto list = root.get("added_tokens")) {
      StringMap<int32_t> added_ids;
      int32_t max_added = -1;
      for (size_t i = 0; i < list->size(); ++i) {
        const Node t = list->at(i);
        AddedToken a;
        a.id = t.at("id").id();
        a.content = t.at("content").str();
        if (a.content.empty()) t.at("content").bad("is empty");
        int32_t expect;
        if (auto it = added_ids.find(a.content); it != added_ids.end()) {
          expect = it->second;
        } else if (auto v = m->token_to_id.find(a.content); v != m->token_to_id.end()) {
          expect = v->second;
        } else {
          expect = std::max(max_added, static_cast<int32_t>(by_id.size()) - 1) + 1;
        }
        if (a.id != expect) {
          t.at("id").bad(cat("is ", a.id, " but HF tokenizers gives '", a.content, "' id ", expect,
                             " (the id of the same text in the vocab or an earlier added token, else the next id)"));
        }
        added_ids.emplace(a.content, a.id);
        max_added = std::max(max_added, a.id);
        a.special = t.boolean("special", false);
        a.lstrip = t.boolean("lstrip", false);
        a.rstrip = t.boolean("rstrip", false);
        a.single_word = t.boolean("single_word", false);
        a.normalized = t.boolean("normalized", !a.special);
        max_id = std::max(max_id, a.id);
        added.push_back(std::move(a));
      }
    }

    // id → text: vocab, then added tokens on top (HF looks those up first both ways).
    const auto n_ids = static_cast<size_t>(max_id) + 1;
    m->flags.assign(n_ids, 0);
    std::vector<const std::string*> text(n_ids, nullptr);
    for (const auto& [id, tok] : by_id) {
      if (text[size_t(id)])
        vocab.bad(cat("gives id ", id, " to two tokens ('", *text[size_t(id)], "' and '", *tok, "')"));
      m->flags[size_t(id)] = kPresent;
      text[size_t(id)] = tok;
    }

    // Merges, "a b" (older files) or ["a", "b"], rank = position. Looked up before the added
    // tokens enter token_to_id: merges only name vocab tokens.
    MergeTable merges;
    {
      const Node list = model.at("merges");
      const size_t n = list.size();
      merges.reserve(n);
      std::string joined;
      for (size_t i = 0; i < n; ++i) {
        const nlohmann::json& item = list.j[i];
        std::string_view a, b;
        if (item.is_string()) {
          const std::string_view s = item.get_ref<const std::string&>();
          const size_t sp = s.find(' ');
          if (sp == std::string_view::npos || s.find(' ', sp + 1) != std::string_view::npos) {
            list.at(i).bad("must be two tokens separated by one space");
          }
          a = s.substr(0, sp);
          b = s.substr(sp + 1);
        } else if (item.is_array() && item.size() == 2 && item[0].is_string() && item[1].is_string()) {
          a = item[0].get_ref<const std::string&>();
          b = item[1].get_ref<const std::string&>();
        } else {
          list.at(i).bad("must be \"a b\" or [\"a\", \"b\"]");
        }
        auto id_of = [&](std::string_view s) {
          auto it = m->token_to_id.find(s);
          if (it == m->token_to_id.end()) list.at(i).bad(cat("uses '", s, "', which is not in model.vocab"));
          return it->second;
        };
        const int32_t left = id_of(a), right = id_of(b);
        joined.assign(a);
        joined += b;
        merges.insert(left, right, {static_cast<int32_t>(i), id_of(joined)});
      }
    }

    const bool ignore_merges = model.boolean("ignore_merges", false);
    StringMap<int32_t> bytes_to_id;
    if (ignore_merges) {
      for (const auto& [id, tok] : by_id) {
        if (auto raw = byte_level::decode(*tok)) bytes_to_id.emplace(std::move(*raw), id);
      }
    }
    m->bpe = std::make_unique<Bpe>(m->byte_ids, std::move(merges), ignore_merges, std::move(bytes_to_id));

    for (const AddedToken& a : added) {
      m->flags[size_t(a.id)] = static_cast<uint8_t>(kPresent | (a.special ? kSpecial : 0));
      text[size_t(a.id)] = &a.content;
      m->token_to_id.insert_or_assign(a.content, a.id);
    }

    // Pools: id → text, id → bytes. HF's ByteLevel decoder maps a token back to bytes when every
    // character is in the byte alphabet, and otherwise keeps the token's own UTF-8.
    m->text_off.reserve(n_ids + 1);
    m->bytes_off.reserve(n_ids + 1);
    for (size_t id = 0; id < n_ids; ++id) {
      m->text_off.push_back(static_cast<uint32_t>(m->text_pool.size()));
      m->bytes_off.push_back(static_cast<uint32_t>(m->bytes_pool.size()));
      if (!text[id]) continue;
      m->text_pool += *text[id];
      if (auto raw = byte_level::decode(*text[id])) {
        m->bytes_pool += *raw;
      } else {
        m->bytes_pool += *text[id];
      }
    }
    m->text_off.push_back(static_cast<uint32_t>(m->text_pool.size()));
    m->bytes_off.push_back(static_cast<uint32_t>(m->bytes_pool.size()));
    // `text` points into `added`; the matcher takes it only now.
    m->added = AddedTokenMatcher(std::move(added));

    tokenizer_detail::Template tpl;
    if (auto n = root.get("post_processor")) tokenizer_detail::read_post_processor(*n, tpl);
    read_config(*m, cfg_text, cfg_file, tpl);
    return m;
  }

  static void read_config(Impl& m, std::optional<std::string_view> cfg_text, const std::string& cfg_file,
                          const tokenizer_detail::Template& tpl) {
    using tokenizer_detail::Node;
    auto special_named = [&](auto names) -> std::optional<int32_t> {
      for (std::string_view name : names) {
        auto it = m.token_to_id.find(name);
        if (it != m.token_to_id.end()) return it->second;
      }
      return std::nullopt;
    };
    if (!cfg_text) {
      m.bos = special_named(tokenizer_detail::kBosNames);
      m.eos = special_named(tokenizer_detail::kEosNames);
      if (tpl.present) {
        m.prefix = tpl.prefix;
        m.suffix = tpl.suffix;
      } else if (m.bos) {
        m.prefix = {*m.bos};
      }
      return;
    }
    const nlohmann::json j = tokenizer_detail::parse(*cfg_text, cfg_file);
    const Node root{j, cfg_file, ""};
    if (!j.is_object()) root.bad("(the top level) must be an object");
    // "bos_token": "<s>" or {"content": "<s>", ...}.
    auto token_of = [&](const char* key) -> std::optional<int32_t> {
      auto n = root.get(key);
      if (!n) return std::nullopt;
      const std::string content = n->j.is_object() ? n->at("content").str() : n->str();
      auto it = m.token_to_id.find(content);
      if (it == m.token_to_id.end()) n->bad(cat("names '", content, "', which is not a token"));
      return it->second;
    };
    m.bos = token_of("bos_token");
    m.eos = token_of("eos_token");
    if (root.get("add_bos_token") || root.get("add_eos_token") || !tpl.present) {
      // transformers' Llama-style tokenizers (DeepSeek's) build their template from these flags.
      if (root.boolean("add_bos_token", true) && m.bos) m.prefix = {*m.bos};
      if (root.boolean("add_eos_token", false) && m.eos) m.suffix = {*m.eos};
    } else {
      m.prefix = tpl.prefix;
      m.suffix = tpl.suffix;
    }
    if (auto t = root.get("chat_template")) {
      if (t->j.is_string()) {
        m.chat_template = t->str();
      } else {
        // A list of {"name", "template"}: take "default", else the first.
        for (size_t i = 0; i < t->size(); ++i) {
          const Node e = t->at(i);
          if (!m.chat_template || e.at("name").str() == "default") m.chat_template = e.at("template").str();
        }
      }
    }
  }

  std::shared_ptr<const Impl> impl_;
};

}  // namespace dsv4::text
