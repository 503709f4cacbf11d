// dsv4 tokenize / detokenize: text ↔ token ids with a checkpoint's tokenizer.json.
//   dsv4 tokenize --tokenizer DIR [--bos] [--bytes] stdin text (as it is, a final newline
//                                                   included) → ids separated by spaces, one line;
//                                                   invalid UTF-8 is an error unless --bytes (then
//                                                   each bad byte becomes its byte token)
//   dsv4 detokenize --tokenizer DIR [--skip-special] ids on stdin (separated by spaces, commas or
//                                                   newlines) → the text, nothing added
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include "common.hpp"
#include "text_options.hpp"

namespace dsv4::cli {

namespace {

std::string read_stdin() {
  std::string s;
  char buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, stdin)) > 0) s.append(buf, n);
  if (std::ferror(stdin)) fail("reading stdin failed");
  return s;
}

}  // namespace

int cmd_tokenize(const Args& a) {
  const text::Tokenizer tok = load_tokenizer(a);
  const std::string in = read_stdin();
  if (!a.has("bytes")) text::utf8::require_valid(in, "stdin");
  const std::vector<int32_t> ids = tok.encode(in, a.has("bos"));
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
  }
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

int cmd_detokenize(const Args& a) {
  const text::Tokenizer tok = load_tokenizer(a);
  const std::string in = read_stdin();
  std::vector<int32_t> ids;
  size_t i = 0;
  while (i < in.size()) {
    const unsigned char c = static_cast<unsigned char>(in[i]);
    if (std::isspace(c) || c == ',') {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < in.size() && !std::isspace(static_cast<unsigned char>(in[j])) && in[j] != ',') ++j;
    const std::string word = in.substr(i, j - i);
    const int64_t v = parse_int(word, "stdin");
    if (v < 0 || v >= tok.vocab_size()) fail("stdin: token id ", v, " is not in the vocabulary (size ", tok.vocab_size(), ")");
    ids.push_back(int32_t(v));
    i = j;
  }
  const std::string text = tok.decode(ids, a.has("skip-special"));
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace dsv4::cli
