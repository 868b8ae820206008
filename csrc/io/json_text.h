#pragma once
#include <string>

namespace sa {
// A JSON string literal for s (UTF-8 passed through, control characters escaped).
std::string json_quote(const std::string& s);
}
