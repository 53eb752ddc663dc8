// Replays fuzz inputs without libFuzzer (and without clang): linked with one target, it feeds
// every file named on the command line, or found in a directory named there, to
// LLVMFuzzerTestOneInput once. The seed corpus and the kept crash inputs are replayed this
// way by `make fuzz-replay` (part of `make unit`). A failed property aborts with its input's name.
#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

namespace {

// The regular files named by arguments, directories expanded one level, sorted.
std::vector<std::string> InputFiles(int argc, char **argv) {
    std::vector<std::string> files;
    for (int i = 1; i < argc; i++) {
        std::filesystem::path path(argv[i]);
        if (std::filesystem::is_directory(path)) {
            for (const auto &entry : std::filesystem::directory_iterator(path))
                if (entry.is_regular_file())
                    files.push_back(entry.path().string());
        } else if (std::filesystem::exists(path)) {
            files.push_back(path.string());
        }
    }
    std::sort(files.begin(), files.end());
    return files;
}

} // namespace

int main(int argc, char **argv) {
    std::vector<std::string> files = InputFiles(argc, argv);
    for (const std::string &file : files) {
        std::ifstream in(file, std::ios::binary);
        std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        amebo::fuzz::g_replayed_file = file.c_str();
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size());
    }
    std::cout << std::filesystem::path(argv[0]).filename().string() << ": " << files.size()
              << " inputs replayed, every property held\n";
    return files.empty() ? 1 : 0;
}
