// Tokenizer tests. DSV4_TOKENIZER_DIR (a string macro) names the folder with the DeepSeek
// tokenizer.json, tokenizer_config.json and cases.json (ids from an independent implementation).
// The expected ids embedded below were produced by HuggingFace tokenizers 0.23.2 (Rust, via its
// Node binding) from the same tokenizer.json; the texts were written for these tests.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "dsv4/text/bpe.hpp"
#include "dsv4/text/byte_level.hpp"
#include "dsv4/text/regex.hpp"
#include "dsv4/text/stream_decoder.hpp"
#include "dsv4/text/tokenizer.hpp"
#include "dsv4/text/utf8.hpp"

#ifndef DSV4_TOKENIZER_DIR
#error "define DSV4_TOKENIZER_DIR as the folder holding tokenizer.json (a string, e.g. -DDSV4_TOKENIZER_DIR='\"path\"')"
#endif

using dsv4::text::StreamDecoder;
using dsv4::text::Tokenizer;
using Ids = std::vector<int32_t>;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

const std::string& tokenizer_json_text() {
  static const std::string s = read_text(std::string(DSV4_TOKENIZER_DIR) + "/tokenizer.json");
  return s;
}

const Tokenizer& deepseek() {
  static const Tokenizer t = Tokenizer::load(DSV4_TOKENIZER_DIR);
  return t;
}

bool valid_utf8(std::string_view s) { return dsv4::text::utf8::valid_prefix(s) == s.size(); }

int32_t byte_token(const Tokenizer& t, uint8_t b) {
  return *t.token_id(dsv4::text::byte_level::encode(std::string(1, static_cast<char>(b))));
}

// The message of the std::runtime_error `f` throws ("" when it throws nothing).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

// A small tokenizer built from the DeepSeek one: its first `n` merges and the vocab they use,
// renumbered densely in the original order, no added tokens. The HF reference ids for the
// variants below were computed on exactly this file.
nlohmann::json trimmed_deepseek(size_t n) {
  nlohmann::json j = nlohmann::json::parse(tokenizer_json_text());
  nlohmann::json merges = nlohmann::json::array();
  std::set<std::string> keep;
  for (int b = 0; b < 256; ++b) keep.insert(dsv4::text::byte_level::encode(std::string(1, static_cast<char>(b))));
  for (size_t i = 0; i < n; ++i) {
    const std::string m = j["model"]["merges"][i];
    const size_t sp = m.find(' ');
    keep.insert(m.substr(0, sp));
    keep.insert(m.substr(sp + 1));
    keep.insert(m.substr(0, sp) + m.substr(sp + 1));
    merges.push_back(m);
  }
  std::map<int64_t, std::string> by_id;
  for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end(); ++it) {
    if (keep.count(it.key())) by_id[it.value().get<int64_t>()] = it.key();
  }
  nlohmann::json vocab = nlohmann::json::object();
  int64_t next = 0;
  for (const auto& [id, tok] : by_id) vocab[tok] = next++;
  j["model"]["vocab"] = vocab;
  j["model"]["merges"] = merges;
  j["added_tokens"] = nlohmann::json::array();
  return j;
}

// A minimal valid byte-level tokenizer.json: the 256 byte tokens (id = byte), "Ġt" (256) from
// the merge "Ġ t", one special token "<s>" (257). The error tests break it one key at a time.
nlohmann::json tiny_json() {
  nlohmann::json vocab = nlohmann::json::object();
  for (int b = 0; b < 256; ++b) vocab[dsv4::text::byte_level::encode(std::string(1, static_cast<char>(b)))] = b;
  vocab["Ġt"] = 256;
  return {
      {"version", "1.0"},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         nlohmann::json::array({{{"type", "Split"},
                                 {"pattern", {{"Regex", " ?\\p{L}+|\\s+"}}},
                                 {"behavior", "Isolated"},
                                 {"invert", false}},
                                {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}})}}},
      {"added_tokens", nlohmann::json::array({{{"id", 257},
                                               {"content", "<s>"},
                                               {"special", true},
                                               {"lstrip", false},
                                               {"rstrip", false},
                                               {"single_word", false},
                                               {"normalized", false}}})},
      {"decoder", {{"type", "ByteLevel"}}},
      {"post_processor", nullptr},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"vocab", vocab}, {"merges", nlohmann::json::array({"Ġ t"})}}},
  };
}

// HF reference ids for texts written for these tests: emoji, CJK, combining marks, long
// numbers, whitespace runs, code, mixed scripts, added tokens inside text, long pieces.
const char* const kExtraCases = R"json(
[
  ["👨\u200d👩\u200d👧\u200d👦 family, 🇯🇵 flag, 🤖 robot ✅ done",
   [25730, 104, 46088, 25730, 105, 46088, 25730, 103, 46088, 25730, 102, 3096, 14, 77579, 110, 43754, 116, 14364, 14, 112838, 247, 20110, 82981, 3989]],
  ["😀😃😄😁🙂 🫠 1\ufe0f\u20e3 #\ufe0f\u20e3",
   [28927, 225, 28927, 228, 28927, 229, 28927, 226, 80300, 227, 7351, 107, 257, 223, 19, 53869, 1823, 53869]],
  ["我爱北京天安门。今天天气很好！",
   [60147, 6127, 954, 117826, 320, 5237, 16652, 12210, 1175]],
  ["東京都は日本の首都です。カタカナとひらがな",
   [10345, 52032, 2841, 82619, 41175, 8262, 320, 15961, 11767, 15961, 27071, 2495, 40259, 4970, 2936, 2942]],
  ["한국어 텍스트도 지원합니다.",
   [5634, 17564, 9227, 61291, 238, 45652, 9260, 97461, 32900, 16]],
  ["漢字かな交じり文・半角ｶﾀｶﾅ・全角ＡＢＣ１２３",
   [29069, 2024, 49534, 1711, 17580, 4553, 978, 4825, 3160, 2877, 5879, 117, 55241, 225, 5879, 117, 55241, 230, 4825, 984, 2877, 65503, 102530, 78665, 127167, 25081]],
  ["e\u0301 vs é, a\u0308\u0304 and n\u0303",
   [71, 17793, 8062, 2678, 14, 260, 66383, 70841, 305, 313, 59436]],
  ["Z\u0324\u0354\u0367\u0311\u0313a\u0308\u0356\u032dl\u0356\u034eg\u031e\u0325o\u0329",
   [60, 139, 100, 140, 245, 140, 103, 139, 242, 139, 244, 67, 66383, 140, 247, 139, 258, 78, 140, 247, 140, 239, 73, 139, 255, 139, 101, 81, 139, 105]],
  ["नमस\u094dत\u0947 द\u0941न\u093fय\u093e, สว\u0e31สด\u0e35คร\u0e31บ, مرحبا بالعالم, שלום עולם",
   [9094, 12524, 70223, 6011, 26227, 101422, 85639, 14, 16211, 34189, 2952, 25581, 79813, 14, 112125, 53067, 9254, 1183, 14059, 14, 9500, 16467, 6166, 41141]],
  ["\u0301\u0302 leading marks",
   [17793, 75274, 6646, 15844]],
  ["3141592653589793238462643383279502884197169399375105820974944",
   [18321, 10969, 16674, 20892, 31609, 18033, 31883, 16326, 18335, 19352, 23322, 17391, 22903, 27853, 31550, 30145, 19037, 28691, 35354, 25819, 22]],
  ["1,234,567.89 and 0.000001 and 1e-9 and -0x7FFF",
   [19, 14, 14456, 14, 25601, 16, 4362, 305, 223, 18, 16, 1320, 6455, 305, 223, 19, 71, 15, 27, 305, 565, 18, 90, 25, 107625]],
  ["Arabic-Indic ٠١٢٣٤٥٦٧٨٩ and Devanagari ०१२३ digits",
   [70261, 68353, 297, 223, 82025, 63468, 76647, 127056, 152, 100, 152, 101, 152, 102, 152, 103, 152, 104, 152, 105, 305, 11099, 276, 409, 1035, 223, 39324, 26020, 35712, 47045, 10923]],
  ["①②③ ½ ⅓ Ⅻ ²³ v1.2.3-rc4",
   [104894, 21686, 223, 23951, 223, 23603, 244, 223, 23603, 107, 223, 1628, 5826, 374, 19, 16, 20, 16, 21, 15, 6921, 22]],
  ["a    b\t\t\tc  \t \n",
   [67, 361, 291, 998, 28544, 262, 200, 539]],
  ["   \n\n   \n",
   [92687, 14320]],
  ["\r\n\r\n\r\nwindows\r\n",
   [204, 201, 204, 201, 204, 201, 83906, 204, 201]],
  ["trailing   ",
   [19660, 7400, 361]],
  ["\u3000全角スペース\u3000と\u00a0nbsp",
   [18524, 984, 2877, 111325, 37046, 18524, 2495, 2162, 28706]],
  ["next\u0085line and para\u2029graph and line\u2028sep",
   [6695, 129, 230, 1836, 305, 3583, 300, 105, 25141, 305, 2562, 300, 104, 88351]],
  ["mongolian\u180evowel \u180e sep",
   [89963, 119905, 115522, 239, 88, 56347, 223, 115522, 239, 45434]],
  ["\ufeffBOM at start, zero\u200bwidth space, joiner\u200d",
   [15251, 36, 7239, 509, 1904, 14, 8390, 35020, 12356, 3987, 14, 5590, 10129, 46088]],
  ["#include <vector>\nint main() {\n  std::vector<int> v{1, 2, 3};\n  return v.size() > 2 ? 0 : 1;\n}\n",
   [6201, 818, 10689, 1018, 650, 1840, 1393, 875, 223, 6849, 2366, 10689, 11699, 32, 374, 93, 19, 14, 223, 20, 14, 223, 21, 12774, 223, 1354, 374, 12571, 1393, 1955, 223, 20, 4054, 223, 18, 1313, 223, 19, 510, 1778]],
  ["for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(f\"{i=}\")  # even\n",
   [2251, 1008, 295, 3291, 10, 553, 3395, 5733, 1008, 3104, 223, 20, 2606, 223, 18, 1137, 200, 40817, 5123, 44753, 75, 31, 95, 5925, 223, 1823, 1749, 201]],
  ["{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
   [24313, 4989, 3362, 764, 19, 14, 223, 20, 16, 23, 14, 5100, 14, 3292, 3031, 582, 80, 12904, 3362, 28612, 67, 3362, 582, 68, 4, 3831]],
  ["<div class=\"x\">&amp; &lt;tag&gt;</div>",
   [16099, 1312, 1281, 90, 110008, 2030, 29, 1051, 6306, 29, 24164, 45693, 47827, 2512, 32]],
  ["$ ls -la | grep '^d' && echo \"done\" > /dev/null 2>&1",
   [6, 52592, 565, 4558, 369, 75140, 905, 64, 70, 9, 6546, 11818, 582, 44629, 4, 1955, 1492, 14599, 95702, 223, 20, 31513, 19]],
  ["Hello мир عالم 世界 🌍 Γειά σου κόσμε",
   [19923, 74779, 77538, 223, 3427, 73369, 238, 25938, 10976, 5563, 6931, 5700, 122189, 2781, 30619]],
  ["I'M YOU'RE it’s don’t WE'LL they'd",
   [43, 125845, 28253, 9, 3827, 436, 442, 85, 2090, 442, 86, 33418, 9, 3699, 851, 7485]],
  ["CONSTANT_CASE camelCase PascalCase kebab-case dot.case",
   [22904, 2453, 15576, 14235, 15354, 82389, 15434, 56780, 15434, 473, 39637, 54690, 19223, 4001, 726]],
  ["<｜User｜>hi<｜Assistant｜>hello<｜end▁of▁sentence｜>",
   [128803, 6366, 128804, 33310, 1]],
  ["x<｜User｜><｜User｜>y",
   [90, 128803, 128803, 91]],
  ["<｜User <｜User｜ ｜User｜> <｜user｜>",
   [30, 28217, 6756, 818, 28217, 6756, 28217, 223, 28217, 6756, 28217, 32, 818, 28217, 5265, 28217, 32]],
  ["<｜begin▁of▁sentence｜><｜begin▁of▁sentence｜>text",
   [0, 0, 2067]],
  ["<|EOT|> end <|EOT|",
   [128805, 1522, 818, 94, 39, 4894, 94]],
  ["<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
   [128806, 128808, 8701, 128814, 1133, 65, 50219, 201, 9854, 14479, 201, 24313, 37399, 3362, 582, 51119, 60676, 9854, 128809, 128807]],
  ["<｜place▁holder▁no▁42｜> and <｜fim▁begin｜>a<｜fim▁hole｜>b<｜fim▁end｜>",
   [128042, 305, 223, 128801, 67, 128800, 68, 128802]],
  ["< ｜User｜> and <<｜User｜>>",
   [30, 223, 28217, 6756, 28217, 32, 305, 818, 128803, 32]],
  ["\u0000\u0001\u001f\u007f nul and controls",
   [191, 192, 222, 224, 120255, 305, 13649]],
  ["private \ue000 use and \udbff\udffd plane 16",
   [12339, 223, 97817, 225, 1347, 305, 223, 179, 240, 126, 124, 11938, 223, 926]],
  ["Pneumonoultramicroscopicsilicovolcanoconiosis",
   [50, 20776, 265, 5703, 86, 966, 2957, 1822, 476, 1219, 30842, 757, 331, 9332, 30993, 37609]],
  ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
   [89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 89086, 39535]],
  ["的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的的",
   [301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301, 301]],
  ["abababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababab",
   [425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425, 425]],
  ["!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
   [67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 67692, 27656, 85479]],
  ["                                                                                                                                                                                                                                                                                                            x",
   [69933, 69933, 29996, 1527]]
])json";

// Pre-tokenizer variants on trimmed_deepseek(merges_kept), with HF reference ids: each Split
// behavior, invert, String patterns, empty regex matches, the Oniguruma → PCRE2 translations
// (\s, \h, (?m), ^/$ as line anchors), and added tokens with lstrip / rstrip / single_word.
const char* const kVariantCases = R"json(
{"merges_kept": 3000, "variants": [
 {"name": "deepseek_pre_tokenizer", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false}, {"type": "Split", "pattern": {"Regex": "[一-龥\u3040-ゟ゠-ヿ]+"}, "behavior": "Isolated", "invert": false}, {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 2055, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 636, 422, 220, 636]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 302, 289, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [220, 2067, 198, 800, 826, 2559, 2140, 1019, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 220, 126, 121, 220, 149, 96]],
   ["a\nb a b aab", [64, 198, 65, 257, 288, 257, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "removed", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 86, 269, 511, 0, 2104, 731, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 422, 422, 422]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 455, 76, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [299, 357, 800, 826, 1833, 83, 334, 318]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 126, 121, 149, 96]],
   ["a\nb a b aab", [64, 65, 64, 65, 64, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 15, 87, 16, 37, 2020]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 464, 79, 157, 254, 236, 76, 697, 328, 973, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 425, 400, 344, 281, 427, 126, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "merged_with_previous", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "[,.!?]"}, "behavior": "MergedWithPrevious", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 2055, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 636, 422, 220, 636]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 302, 289, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [259, 299, 357, 198, 800, 826, 2559, 2140, 1019, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 1200, 121, 541, 96]],
   ["a\nb a b aab", [64, 198, 65, 257, 288, 257, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "merged_with_next", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{P}"}, "behavior": "MergedWithNext", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 2055, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 636, 422, 220, 636]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 302, 289, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [259, 299, 357, 198, 800, 826, 2559, 2140, 1019, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 1200, 121, 541, 96]],
   ["a\nb a b aab", [64, 198, 65, 257, 288, 257, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 220, 425, 400, 344, 281, 427, 220, 126, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "contiguous_inverted", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}"}, "behavior": "Contiguous", "invert": true}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 2055, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 636, 422, 220, 636]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 302, 289, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [259, 299, 357, 198, 800, 826, 2559, 2140, 1019, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 220, 126, 121, 220, 149, 96]],
   ["a\nb a b aab", [64, 198, 65, 257, 288, 257, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "isolated_inverted", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "[a-z]+"}, "behavior": "Isolated", "invert": true}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 220, 86, 269, 511, 0, 339, 83, 6, 82, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 220, 422, 422, 259, 422]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 220, 455, 220, 76, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [259, 299, 357, 198, 800, 826, 220, 1833, 2140, 220, 83, 334, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 1200, 121, 541, 96]],
   ["a\nb a b aab", [64, 198, 65, 220, 64, 220, 65, 220, 64, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 220, 2020]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "string_pattern", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": "ab"}, "behavior": "MergedWithNext", "invert": false}, {"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 86, 269, 511, 0, 2104, 731, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 422, 422, 422]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 455, 76, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [299, 357, 198, 800, 826, 1833, 198, 83, 334, 318]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 126, 121, 149, 96]],
   ["a\nb a b aab", [64, 198, 65, 64, 65, 64, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 15, 87, 16, 37, 2020]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 425, 400, 344, 281, 427, 126, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "byte_level_use_regex", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 2055, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 636, 422, 220, 636]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 302, 289, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [220, 2067, 198, 800, 826, 2559, 2140, 1019, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 1200, 121, 541, 96]],
   ["a\nb a b aab", [64, 198, 65, 257, 288, 257, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "empty_matches", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "a*"}, "behavior": "Isolated", "invert": false}, {"type": "Split", "pattern": {"Regex": "(?=[A-Z])"}, "behavior": "MergedWithNext", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 68, 75, 75, 78, 11, 220, 86, 78, 81, 75, 67, 0, 220, 40, 83, 6, 82, 220, 17, 15, 17, 19, 13]],
   ["aab abab  ab", [64, 64, 65, 220, 64, 65, 64, 65, 220, 220, 64, 65]],
   ["CamelCaseWord and mixedCASE", [34, 64, 76, 68, 75, 34, 64, 82, 68, 54, 78, 81, 67, 220, 64, 77, 67, 220, 76, 72, 87, 68, 67, 34, 32, 50, 36]],
   ["  lead\nnext line  \n trail  ", [220, 220, 75, 68, 64, 67, 198, 77, 68, 87, 83, 220, 75, 72, 77, 68, 220, 220, 198, 220, 83, 81, 64, 72, 75, 220, 220]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 17, 17, 89, 18, 18, 18, 220, 126, 121, 220, 149, 96]],
   ["a\nb a b aab", [64, 198, 65, 220, 64, 220, 65, 220, 64, 64, 65]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 65, 68, 68, 69, 220, 15, 87, 16, 37, 220, 70, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 64, 65, 197, 82, 68, 79, 157, 254, 236, 76, 78, 77, 70, 78, 75, 72, 64, 77, 126, 227, 77, 68, 75]],
   ["…— “quoted” ¿qué?", [1245, 962, 220, 425, 80, 84, 78, 83, 68, 67, 427, 220, 126, 123, 80, 84, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "anchors_are_line_anchors", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "^\\s+|\\s+$"}, "behavior": "Removed", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 2055, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 636, 422, 220, 636]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 302, 289, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [299, 357, 198, 800, 826, 2559, 198, 83, 334, 318]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 1200, 121, 541, 96]],
   ["a\nb a b aab", [64, 198, 65, 257, 288, 257, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "onig_hex_class", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\h+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 68, 859, 78, 11, 644, 75, 67, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 220, 422, 422, 259, 422]],
   ["CamelCaseWord and mixedCASE", [34, 64, 76, 68, 75, 34, 64, 82, 68, 54, 269, 67, 220, 64, 77, 67, 289, 1420, 281, 34, 32, 50, 36]],
   ["  lead\nnext line  \n trail  ", [259, 75, 68, 357, 198, 77, 68, 826, 311, 258, 68, 2140, 838, 64, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 1200, 121, 541, 96]],
   ["a\nb a b aab", [64, 198, 65, 220, 64, 220, 65, 220, 64, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 82, 68, 79, 157, 254, 236, 76, 697, 328, 72, 64, 77, 126, 227, 77, 68, 75]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "onig_m_is_dotall", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?m:a.b)"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 2055, 0, 980, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 636, 422, 220, 636]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 302, 289, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [259, 299, 357, 198, 800, 826, 2559, 2140, 1019, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 1200, 121, 541, 96]],
   ["a\nb a b aab", [64, 198, 65, 220, 64, 288, 220, 64, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 333, 70]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 808, 400, 344, 281, 427, 1200, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "white_space_class", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\S+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "cases": [
   ["Hello, world! It's 2024.", [39, 571, 78, 11, 220, 86, 269, 511, 0, 220, 2104, 731, 220, 936, 19, 13]],
   ["aab abab  ab", [64, 422, 220, 422, 422, 259, 422]],
   ["CamelCaseWord and mixedCASE", [34, 353, 314, 34, 723, 54, 760, 220, 455, 220, 76, 1420, 281, 34, 2723, 36]],
   ["  lead\nnext line  \n trail  ", [259, 299, 357, 198, 800, 826, 220, 1833, 2140, 220, 83, 334, 318, 259]],
   ["x1y22z333 ½ ٣", [87, 16, 88, 1299, 89, 1668, 18, 220, 126, 121, 220, 149, 96]],
   ["a\nb a b aab", [64, 198, 65, 220, 64, 220, 65, 220, 64, 422]],
   ["DEADbeef 0x1F gg", [35, 36, 32, 35, 2301, 1235, 220, 15, 87, 16, 37, 220, 2020]],
   ["tab\tsep\u180emongolian\u0085nel", [83, 422, 197, 464, 79, 157, 254, 236, 76, 697, 328, 973, 126, 227, 77, 314]],
   ["…— “quoted” ¿qué?", [1245, 962, 220, 425, 400, 344, 281, 427, 220, 126, 123, 400, 616, 30]],
   ["深度求索 日本語", [2197, 1026, 1642, 1115, 95, 220, 1077, 914, 2061, 252]],
   ["", []]
 ]},
 {"name": "added_token_flags", "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false}, {"type": "Split", "pattern": {"Regex": "[一-龥\u3040-ゟ゠-ヿ]+"}, "behavior": "Isolated", "invert": false}, {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}, "added_tokens": [{"id": 3256, "content": "<mask>", "single_word": false, "lstrip": true, "rstrip": true, "normalized": false, "special": true}, {"id": 285, "content": "ing", "single_word": true, "lstrip": false, "rstrip": false, "normalized": true, "special": false}, {"id": 3257, "content": "[X]", "single_word": false, "lstrip": true, "rstrip": false, "normalized": true, "special": false}, {"id": 3258, "content": "wor", "single_word": false, "lstrip": false, "rstrip": true, "normalized": false, "special": false}, {"id": 3259, "content": "<mask>long", "single_word": false, "lstrip": false, "rstrip": false, "normalized": true, "special": false}, {"id": 3260, "content": " sp", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false}, {"id": 165, "content": "é", "single_word": true, "lstrip": false, "rstrip": false, "normalized": false, "special": false}], "cases": [
   ["<mask>", [3256]],
   ["  <mask>  x", [3256, 87]],
   ["a <mask>long b", [64, 3256, 75, 697, 288]],
   ["wor <mask>", [3258, 3256]],
   ["world  wor  x", [3258, 511, 259, 3258, 87]],
   ["ing sing ing_ _ing ingé éing ing² ²ing", [285, 3063, 220, 285, 62, 941, 285, 220, 285, 616, 2675, 285, 220, 285, 1625, 220, 1625, 285]],
   ["say [X]  [X]", [82, 383, 3257, 3257]],
   [" sp x sp spx", [3260, 1524, 875, 875, 87]],
   ["é aé éa é", [165, 257, 616, 2675, 64, 220, 165]],
   ["<mask>long<mask>", [3256, 75, 697, 3256]],
   ["", []]
 ]}
]})json";

}  // namespace

TEST_CASE("golden cases.json: exact ids and round trip", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  const auto cases = nlohmann::json::parse(read_text(std::string(DSV4_TOKENIZER_DIR) + "/cases.json"));
  size_t passed = 0;
  for (const auto& c : cases.at("cases")) {
    const std::string text = c.at("text");
    const Ids want = c.at("ids");
    INFO("text: " << text);
    const Ids got = tok.encode(text);
    CHECK(got == want);
    CHECK(tok.decode(got) == text);
    if (got == want && tok.decode(got) == text) ++passed;
  }
  CHECK(passed == cases.at("cases").size());
  CHECK(passed >= 20);
}

TEST_CASE("HF reference ids for extra texts, and round trip", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  const auto cases = nlohmann::json::parse(kExtraCases);
  for (const auto& c : cases) {
    const std::string text = c.at(0);
    const Ids want = c.at(1);
    INFO("text: " << text);
    const Ids got = tok.encode(text);
    CHECK(got == want);
    CHECK(tok.decode(got) == text);
  }
}

TEST_CASE("Split behaviors, regex translation and added-token flags match HF", "[tokenizer]") {
  const auto ref = nlohmann::json::parse(kVariantCases);
  const nlohmann::json base = trimmed_deepseek(ref.at("merges_kept").get<size_t>());
  for (const auto& v : ref.at("variants")) {
    nlohmann::json j = base;
    j["pre_tokenizer"] = v.at("pre_tokenizer");
    if (v.contains("added_tokens")) j["added_tokens"] = v.at("added_tokens");
    const Tokenizer tok = Tokenizer::from_json_text(j.dump());
    for (const auto& c : v.at("cases")) {
      const std::string text = c.at(0);
      const Ids want = c.at(1);
      INFO("variant " << v.at("name").get<std::string>() << ", text: " << text);
      CHECK(tok.encode(text) == want);
    }
  }
}

TEST_CASE("round trip of generated text", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  // Code points from every kind of range the regexes treat differently.
  const std::vector<std::pair<char32_t, char32_t>> ranges = {
      {0x00, 0x7F},     {0x80, 0x24F},    {0x300, 0x36F},     {0x370, 0x3FF},     {0x400, 0x4FF},   {0x590, 0x6FF},
      {0x900, 0x97F},   {0x2000, 0x206F}, {0x2100, 0x27FF},   {0x3000, 0x30FF},   {0x4E00, 0x9FFF}, {0xAC00, 0xD7A3},
      {0xE000, 0xF8FF}, {0xFE00, 0xFFFD}, {0x1F300, 0x1FAFF}, {0x10000, 0x10FFFF}};
  std::mt19937 rng(12345);
  for (int n = 0; n < 2000; ++n) {
    std::string text;
    const int len = std::uniform_int_distribution<int>(0, 40)(rng);
    for (int k = 0; k < len; ++k) {
      const auto& [lo, hi] = ranges[rng() % ranges.size()];
      char32_t cp = lo + static_cast<char32_t>(rng() % (hi - lo + 1));
      if (cp >= 0xD800 && cp <= 0xDFFF) cp = 'x';
      dsv4::text::utf8::append_code_point(text, cp);
      if (rng() % 8 == 0) text += std::vector<const char*>{" ", "  ", "\n", "<｜User｜>", "123456", "'s"}[rng() % 6];
    }
    INFO("text: " << text);
    REQUIRE(tok.decode(tok.encode(text)) == text);
  }
}

TEST_CASE("invalid UTF-8 is encoded byte by byte and never crashes", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  CHECK(tok.encode("\xFF") == Ids{byte_token(tok, 0xFF)});
  CHECK(tok.encode("\xC0\xAF") == Ids{byte_token(tok, 0xC0), byte_token(tok, 0xAF)});  // overlong '/'
  // Valid text around the bad bytes is tokenized as usual.
  Ids want = tok.encode("Hello");
  want.push_back(byte_token(tok, 0xED));  // a surrogate's lead: invalid
  want.push_back(byte_token(tok, 0xA0));
  want.push_back(byte_token(tok, 0x80));
  for (int32_t id : tok.encode(" world")) want.push_back(id);
  CHECK(tok.encode("Hello\xED\xA0\x80 world") == want);

  std::mt19937 rng(7);
  for (int n = 0; n < 3000; ++n) {
    std::string bytes(rng() % 64, '\0');
    for (char& c : bytes) c = static_cast<char>(rng() % 4 == 0 ? 0x80 + rng() % 0x80 : rng() % 256);
    if (n % 5 == 0) bytes += "<｜User｜>\xE4\xB8";  // an added token, then a cut-off character
    const Ids ids = tok.encode(bytes);
    REQUIRE(tok.decode_bytes(ids) == bytes);  // lossless
    const std::string text = tok.decode(ids);
    REQUIRE(valid_utf8(text));
    REQUIRE(text == dsv4::text::utf8::lossy(bytes));
  }
}

TEST_CASE("decode: lossy like HF, skip_special, bad ids throw", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  const Ids ids = {0, 23166, 128803, 1};  // <bos> Hi <｜User｜> <eos>
  CHECK(tok.decode(ids) == "<｜begin▁of▁sentence｜>Hi<｜User｜><｜end▁of▁sentence｜>");
  CHECK(tok.decode(ids, true) == "Hi<｜User｜>");  // <｜User｜> is an added, not a special, token
  const Ids half_emoji = {byte_token(tok, 0xF0), byte_token(tok, 0x9F)};
  CHECK(tok.decode(half_emoji) == "\xEF\xBF\xBD");
  CHECK(tok.decode_bytes(half_emoji) == "\xF0\x9F");

  for (int32_t bad : {-1, tok.vocab_size(), tok.vocab_size() + 1000, INT32_MAX}) {
    const Ids v = {23166, bad};
    const std::string msg = error_of([&] { (void)tok.decode(v); });
    INFO(msg);
    CHECK(msg.find(std::to_string(bad)) != std::string::npos);
    CHECK(!error_of([&] { (void)tok.token_text(bad); }).empty());
    CHECK(!error_of([&] { (void)tok.is_special(bad); }).empty());
  }
}

TEST_CASE("accessors, BOS/EOS and the chat template", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  CHECK(tok.vocab_size() == 128815);
  CHECK(tok.bos_id() == 0);
  CHECK(tok.eos_id() == 1);
  CHECK(tok.token_text(0) == "<｜begin▁of▁sentence｜>");
  CHECK(tok.token_id("<｜User｜>") == 128803);
  CHECK(tok.token_id("Ġthe") == 270);
  CHECK(tok.token_text(270) == "Ġthe");
  CHECK(tok.token_bytes(270) == " the");
  CHECK(!tok.token_id("no such token").has_value());
  CHECK(tok.is_special(0));
  CHECK(!tok.is_special(128803));
  CHECK(tok.added_tokens().size() == 818);
  REQUIRE(tok.chat_template().has_value());
  CHECK(tok.chat_template()->find("<｜Assistant｜>") != std::string::npos);
  // add_bos_token = true, add_eos_token = false in tokenizer_config.json.
  CHECK(tok.encode("Hi", true) == Ids{0, 23166});
  CHECK(tok.encode("", true) == Ids{0});
  CHECK(tok.encode("").empty());

  // Without tokenizer_config.json BOS/EOS are found by name.
  const Tokenizer bare = Tokenizer::from_json_text(tokenizer_json_text());
  CHECK(bare.bos_id() == 0);
  CHECK(bare.eos_id() == 1);
  CHECK(!bare.chat_template().has_value());
  CHECK(bare.encode("Hi", true) == Ids{0, 23166});
}

TEST_CASE("StreamDecoder never splits a character and ends with decode()'s text", "[stream]") {
  const Tokenizer& tok = deepseek();
  const auto cases = nlohmann::json::parse(kExtraCases);
  size_t split_tokens = 0;
  for (const auto& c : cases) {
    const std::string text = c.at(0);
    const Ids ids = tok.encode(text);
    for (int32_t id : ids) split_tokens += !valid_utf8(tok.token_bytes(id));
    for (bool skip : {false, true}) {
      StreamDecoder sd(tok, skip);
      std::string out;
      for (int32_t id : ids) {
        const std::string piece = sd.push(id);
        INFO("text: " << text);
        REQUIRE(valid_utf8(piece));
        REQUIRE(sd.pending_bytes() <= 3);
        out += piece;
      }
      out += sd.flush();
      CHECK(out == tok.decode(ids, skip));
      if (!skip) CHECK(out == text);
    }
  }
  CHECK(split_tokens > 20);  // the texts do exercise tokens that end mid-character

  // One byte at a time: nothing until the emoji is complete.
  StreamDecoder sd(tok);
  CHECK(sd.push(byte_token(tok, 0xF0)).empty());
  CHECK(sd.push(byte_token(tok, 0x9F)).empty());
  CHECK(sd.push(byte_token(tok, 0x98)).empty());
  CHECK(sd.push(byte_token(tok, 0x80)) == "😀");
  // A byte that can never start a character comes out at once as U+FFFD.
  CHECK(sd.push(byte_token(tok, 0xFF)) == "\xEF\xBF\xBD");
  // A cut-off character followed by ASCII: U+FFFD then the ASCII, as decode() gives.
  CHECK(sd.push(byte_token(tok, 0xE4)).empty());
  CHECK(sd.push(*tok.token_id("a")) ==
        "\xEF\xBF\xBD"
        "a");
  // Held bytes at the end become U+FFFD on flush; an unknown id throws and changes nothing.
  CHECK(sd.push(byte_token(tok, 0xE4)).empty());
  CHECK(!error_of([&] { (void)sd.push(-5); }).empty());
  CHECK(sd.pending_bytes() == 1);
  CHECK(sd.flush() == "\xEF\xBF\xBD");
  CHECK(sd.flush().empty());

  // Random id sequences: same text as decode(), valid UTF-8 at every step.
  std::mt19937 rng(99);
  for (int n = 0; n < 500; ++n) {
    Ids ids(rng() % 16);
    for (int32_t& id : ids)
      id = rng() % 2 ? static_cast<int32_t>(rng() % 300) : static_cast<int32_t>(rng() % tok.vocab_size());
    StreamDecoder s(tok, n % 2 == 1);
    std::string out;
    for (int32_t id : ids) {
      const std::string piece = s.push(id);
      REQUIRE(valid_utf8(piece));
      out += piece;
    }
    out += s.flush();
    REQUIRE(out == tok.decode(ids, n % 2 == 1));
  }
}

TEST_CASE("malformed tokenizer.json: std::runtime_error naming the key", "[errors]") {
  REQUIRE_NOTHROW(Tokenizer::from_json_text(tiny_json().dump()));
  const Tokenizer tiny = Tokenizer::from_json_text(tiny_json().dump());
  CHECK(tiny.encode("<s> tt") == Ids{257, 256, 116});
  CHECK(tiny.vocab_size() == 258);

  struct Case {
    const char* what;
    std::function<void(nlohmann::json&)> edit;
    std::vector<std::string> expect;  // substrings of the message
  };
  const std::vector<Case> cases = {
      {"missing vocab", [](auto& j) { j["model"].erase("vocab"); }, {"tokenizer.json", "'model.vocab'", "missing"}},
      {"vocab not an object", [](auto& j) { j["model"]["vocab"] = 3; }, {"'model.vocab'"}},
      {"vocab id not a number", [](auto& j) { j["model"]["vocab"]["Ġt"] = "x"; }, {"'model.vocab.Ġt'"}},
      {"vocab id too large",
       [](auto& j) { j["model"]["vocab"]["Ġt"] = int64_t{1} << 40; },
       {"'model.vocab.Ġt'", "outside"}},
      {"duplicate vocab id", [](auto& j) { j["model"]["vocab"]["Ġt"] = 5; }, {"'model.vocab'", "two tokens"}},
      {"missing byte token", [](auto& j) { j["model"]["vocab"].erase("Ġ"); }, {"'model.vocab'", "byte 32"}},
      {"missing merges", [](auto& j) { j["model"].erase("merges"); }, {"'model.merges'", "missing"}},
      {"merge of unknown token",
       [](auto& j) { j["model"]["merges"][0] = "Ġ zz"; },
       {"'model.merges[0]'", "'zz'", "not in model.vocab"}},
      {"merge not a pair", [](auto& j) { j["model"]["merges"][0] = 7; }, {"'model.merges[0]'"}},
      {"merge with three parts", [](auto& j) { j["model"]["merges"][0] = "a b c"; }, {"'model.merges[0]'"}},
      {"model type", [](auto& j) { j["model"]["type"] = "Unigram"; }, {"'model.type'", "Unigram"}},
      {"dropout", [](auto& j) { j["model"]["dropout"] = 0.1; }, {"'model.dropout'"}},
      {"unknown pre-tokenizer",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["type"] = "Whitespace"; },
       {"'pre_tokenizer.pretokenizers[0].type'", "Whitespace"}},
      {"unknown split behavior",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
       {"'pre_tokenizer.pretokenizers[0].behavior'", "Sideways"}},
      {"regex that does not compile",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(ab"; },
       {"'pre_tokenizer.pretokenizers[0].pattern.Regex'", "does not compile"}},
      {"regex without PCRE2 translation",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[\\S]"; },
       {"'pre_tokenizer.pretokenizers[0].pattern.Regex'", "\\S inside"}},
      {"pattern of neither kind",
       [](auto& j) {
         j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Glob", "*"}};
       },
       {"'pre_tokenizer.pretokenizers[0].pattern'"}},
      {"no ByteLevel step",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"].erase(1); },
       {"'pre_tokenizer'", "ByteLevel"}},
      {"ByteLevel not last",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"].push_back(j["pre_tokenizer"]["pretokenizers"][0]); },
       {"'pre_tokenizer.pretokenizers[2]'", "last"}},
      {"ByteLevel add_prefix_space",
       [](auto& j) { j["pre_tokenizer"]["pretokenizers"][1]["add_prefix_space"] = true; },
       {"'pre_tokenizer.pretokenizers[1].add_prefix_space'"}},
      {"normalizer",
       [](auto& j) {
         j["normalizer"] = {{"type", "NFC"}};
       },
       {"'normalizer.type'", "NFC"}},
      {"decoder",
       [](auto& j) {
         j["decoder"] = {{"type", "WordPiece"}};
       },
       {"'decoder.type'", "WordPiece"}},
      {"added token with a wrong id",
       [](auto& j) { j["added_tokens"][0]["id"] = 300; },
       {"'added_tokens[0].id'", "is 300", "id 257"}},
      {"added token without content",
       [](auto& j) { j["added_tokens"][0].erase("content"); },
       {"'added_tokens[0].content'"}},
      {"added token flag not a bool",
       [](auto& j) { j["added_tokens"][0]["special"] = "yes"; },
       {"'added_tokens[0].special'"}},
      {"post-processor",
       [](auto& j) {
         j["post_processor"] = {{"type", "BertProcessing"}};
       },
       {"'post_processor.type'"}},
      {"top level", [](auto& j) { j = nlohmann::json::array(); }, {"top level"}},
  };
  for (const Case& c : cases) {
    nlohmann::json j = tiny_json();
    c.edit(j);
    const std::string msg = error_of([&] { (void)Tokenizer::from_json_text(j.dump()); });
    INFO(c.what << ": " << msg);
    REQUIRE(!msg.empty());
    for (const std::string& e : c.expect) CHECK(msg.find(e) != std::string::npos);
  }

  // Not JSON at all, or cut short.
  CHECK(error_of([] { (void)Tokenizer::from_json_text("{\"model\": "); }).find("tokenizer.json: malformed JSON") == 0);
  CHECK(error_of([] { (void)Tokenizer::from_json_text(""); }).find("malformed JSON") != std::string::npos);
  const std::string text = tiny_json().dump();
  for (size_t cut : {size_t{1}, text.size() / 3, text.size() / 2, text.size() - 1}) {
    CHECK(!error_of([&] { (void)Tokenizer::from_json_text(text.substr(0, cut)); }).empty());
  }

  // tokenizer_config.json problems name that file.
  const std::string cfg_msg = error_of([&] { (void)Tokenizer::from_json_text(text, R"({"bos_token": "<nope>"})"); });
  CHECK(cfg_msg.find("tokenizer_config.json: key 'bos_token'") == 0);
  CHECK(error_of([&] { (void)Tokenizer::from_json_text(text, "{oops"); }).find("tokenizer_config.json") == 0);
  CHECK(error_of([&] { (void)Tokenizer::from_json_text(text, R"({"add_bos_token": 1})"); }).find("'add_bos_token'") !=
        std::string::npos);

  // A folder without tokenizer.json.
  CHECK(error_of([] { (void)Tokenizer::load("/nonexistent/dsv4-tokenizer"); }).find("cannot open") !=
        std::string::npos);
}

TEST_CASE("post-processor template and config flags decide BOS/EOS", "[tokenizer]") {
  nlohmann::json j = tiny_json();
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", nlohmann::json::array({{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
                                        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                                        {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}})},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {257}}, {"tokens", {"<s>"}}}}}},
  };
  const Tokenizer with_template = Tokenizer::from_json_text(j.dump());
  CHECK(with_template.encode("t", true) == Ids{257, 116, 257});
  CHECK(with_template.encode("t") == Ids{116});
  // Explicit config flags win over the template (transformers' Llama tokenizers do this).
  const Tokenizer flags = Tokenizer::from_json_text(
      j.dump(),
      R"({"bos_token": {"content": "<s>"}, "eos_token": "<s>", "add_bos_token": false, "add_eos_token": true})");
  CHECK(flags.encode("t", true) == Ids{116, 257});
  CHECK(flags.eos_id() == 257);
}

TEST_CASE("Oniguruma → PCRE2 translation", "[regex]") {
  using dsv4::text::translate_onig;
  const std::string ws =
      "\\t-\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}";
  CHECK(translate_onig("\\s+(?!\\S)", "t") == "[" + ws + "]+(?![^" + ws + "])");
  CHECK(translate_onig("[^\\s\\p{L}]", "t") == "[^" + ws + "\\p{L}]");
  CHECK(translate_onig("\\h\\H[\\h]", "t") == "[0-9a-fA-F][^0-9a-fA-F][0-9a-fA-F]");
  CHECK(translate_onig("(?m:a.b)(?im)x", "t") == "(?s:a.b)(?is)x");
  CHECK(translate_onig("[\\]\\\\s][]s]\\\\s", "t") == "[\\]\\\\s][]s]\\\\s");  // escaped '\\', ']' first
  CHECK(translate_onig("\\u00e9\\x{41}", "t") == "\\x{00e9}\\x{41}");
  CHECK(translate_onig("\\p{N}{1,3}|[一-龥]+", "t") == "\\p{N}{1,3}|[一-龥]+");
  for (const char* bad : {"[\\S]", "[\\H]", "[a[b]]", "[a-z&&[^aeiou]]", "[[:alpha:]]", "\\w+", "\\bx", "[\\W]",
                          "\\u12", "[abc", "ab\\"}) {
    INFO(bad);
    CHECK(error_of([&] { (void)translate_onig(bad, "where"); }).find("where: ") == 0);
  }
  // U+180E is not White_Space: Oniguruma's \s (and so ours) leaves it out, PCRE2's would not.
  const dsv4::text::Regex re("\\s", "t");
  int hits = 0;
  re.for_each_match("\xE1\xA0\x8E \xC2\x85", [&](size_t, size_t) { ++hits; });  // U+180E, ' ', U+0085
  CHECK(hits == 2);
  CHECK(error_of([&] { re.for_each_match("\xFF", [](size_t, size_t) {}); }).find("not valid UTF-8") !=
        std::string::npos);
}

TEST_CASE("BPE: the scan and heap merges agree", "[bpe]") {
  // Random merge tables over a 4-symbol alphabet, so that ties and overlapping pairs are common.
  std::mt19937 rng(2024);
  for (int table = 0; table < 50; ++table) {
    dsv4::text::MergeTable merges;
    int32_t next_id = 4;
    for (int32_t rank = 0; rank < 40; ++rank) {
      const auto a = static_cast<int32_t>(rng() % static_cast<uint32_t>(next_id));
      const auto b = static_cast<int32_t>(rng() % static_cast<uint32_t>(next_id));
      merges.insert(a, b, {rank, next_id++});
    }
    for (int n = 0; n < 100; ++n) {
      std::vector<int32_t> s(1 + rng() % 200);
      for (int32_t& x : s) x = static_cast<int32_t>(rng() % 4);
      std::vector<int32_t> scan = s, heap = s;
      dsv4::text::bpe_detail::merge_scan(merges, scan);
      dsv4::text::bpe_detail::merge_heap(merges, heap);
      REQUIRE(scan == heap);
    }
  }
}

TEST_CASE("concurrent encode gives the same ids", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  const auto cases = nlohmann::json::parse(kExtraCases);
  std::vector<std::string> texts;
  std::vector<Ids> want;
  for (const auto& c : cases) {
    texts.push_back(c.at(0));
    want.push_back(c.at(1));
  }
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 20; ++rep) {
        for (size_t i = 0; i < texts.size(); ++i) {
          const size_t k = (i + static_cast<size_t>(t) * 7) % texts.size();
          if (tok.encode(texts[k]) != want[k]) ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
}

TEST_CASE("large inputs: long runs of one kind of character", "[tokenizer]") {
  const Tokenizer& tok = deepseek();
  for (const std::string unit : {" ", "a", "7", "!", "\n", " \t", "深", "\xCC\x81", "<", "ab1 "}) {
    std::string text;
    while (text.size() < (64u << 10)) text += unit;
    INFO("unit: " << unit);
    const Ids ids = tok.encode(text);
    REQUIRE(!ids.empty());
    REQUIRE(tok.decode(ids) == text);
  }
}
