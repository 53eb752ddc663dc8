# amebo: build with PGXS.  `make`, `make install`, `make installcheck` (needs a server
# binary; runs on its own temporary cluster).  The full test run: test/run-all.sh.
# amebo_router (amebo_router.control, sql/amebo_router.sql) routes amebo's functions to
# shards through PL/Proxy: SQL only, installed with amebo.
EXTENSION = amebo amebo_router
MODULE_big = amebo
# The extension's version: default_version in amebo.control, the one place it is written.
AMEBO_VERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" \
	$(dir $(lastword $(MAKEFILE_LIST)))amebo.control)
# sql/amebo.sql is the whole current version, copied to the install script of AMEBO_VERSION;
# a database on an older version updates through the delta scripts (1.0, then 1.0--1.1 ...).
DATA = sql/amebo--1.0.sql $(wildcard sql/amebo--*--*.sql)
DATA_built = sql/amebo--$(AMEBO_VERSION).sql sql/amebo_router--1.0.sql
PG_CONFIG ?= pg_config

# Pure C++ modules: compiled without PostgreSQL's include path, so they cannot include it.
PURE_SRCS = $(wildcard src/core/*.cpp src/core/*/*.cpp)
PG_SRCS = $(wildcard src/*.cpp src/pg/*.cpp src/store/*.cpp src/registry/*.cpp src/state/*.cpp \
	src/delivery/*.cpp src/consumers/*.cpp src/api/*.cpp src/worker/*.cpp)
PURE_OBJS = $(PURE_SRCS:.cpp=.o)
OBJS = $(PG_SRCS:.cpp=.o) $(PURE_OBJS)
AMEBO_HEADERS = $(wildcard src/*.hpp src/*/*.hpp src/*/*/*.hpp)

# The HTTP client's User-Agent names the version.
PG_CPPFLAGS = -I$(srcdir)/src -DAMEBO_VERSION='"$(AMEBO_VERSION)"'
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-register -Wno-unused-parameter \
	-Wno-missing-field-initializers -fno-omit-frame-pointer $(AMEBO_WERROR) $(AMEBO_SANITIZE)
# AMEBO_SANITIZE: sanitizer flags for compiling and linking (test/sanitize.sh sets them).
SHLIB_LINK = -lcurl -lcrypto -lstdc++ $(AMEBO_SANITIZE)

REGRESS = setup border append read_stream read_all immutability bad_input registry validation \
	state projections subscriptions consumers retention privileges upgrade
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(srcdir)/test/amebo.conf --load-extension=amebo
ISOLATION = append_race retry_race read_all_gap schema_cache consumer_leases truncate_race
ISOLATION_OPTS = --temp-instance=tmp_check_iso --temp-config=$(srcdir)/test/amebo.conf \
	--inputdir=$(srcdir)/test/isolation --outputdir=test/isolation --load-extension=amebo

# PostgreSQL is built with LLVM; its bitcode rule would compile C++17 without our flags.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

sql/amebo--$(AMEBO_VERSION).sql: sql/amebo.sql
	cp $< $@
sql/amebo_router--1.0.sql: sql/amebo_router.sql
	cp $< $@

# valijson's headers, unpacked from Debian's package by test/lib/setup-machine.sh.
VALIJSON_INCLUDE = $(srcdir)/.deps/valijson/usr/include
$(PURE_OBJS): override CPPFLAGS = -I$(srcdir)/src -isystem $(VALIJSON_INCLUDE) -DAMEBO_PURE_CXX
$(VALIJSON_INCLUDE)/valijson/validator.hpp:
	@echo "valijson's headers are missing: run bash test/lib/setup-machine.sh" >&2; exit 1
src/core/schema/json_schema.o src/core/schema/references.o: $(VALIJSON_INCLUDE)/valijson/validator.hpp
$(OBJS): $(AMEBO_HEADERS)
src/delivery/http_client.o: $(srcdir)/amebo.control

.PHONY: demo test bench soak format format-check
demo:
	bash examples/demo.sh
test:
	bash test/run-all.sh
bench:
	bash bench/run.sh
# Not part of `make test`: SOAK_SECONDS (default 600) of mixed load, see test/soak/run.sh.
soak:
	bash test/soak/run.sh

FUZZ_SOURCES = $(wildcard test/fuzz/*.cpp test/fuzz/*.hpp)
format:
	clang-format -i $(PG_SRCS) $(PURE_SRCS) $(AMEBO_HEADERS) $(FUZZ_SOURCES)
format-check:
	clang-format --dry-run --Werror $(PG_SRCS) $(PURE_SRCS) $(AMEBO_HEADERS) $(FUZZ_SOURCES)

# Unit tests of the pure C++ modules: a plain program, no PostgreSQL server needed.
.PHONY: unit
EXTRA_CLEAN += test/unit/delivery_test
unit: test/unit/delivery_test fuzz-replay
	./test/unit/delivery_test
test/unit/delivery_test: test/unit/delivery_test.cpp $(PURE_OBJS) $(AMEBO_HEADERS)
	$(CXX) -std=c++17 -Wall -Wextra -Werror -I$(srcdir)/src -isystem $(VALIJSON_INCLUDE) \
		-DAMEBO_PURE_CXX -o $@ $(filter %.cpp %.o,$^) -lcrypto

# Fuzzing the pure C++ modules (test/fuzz/, one target per file). The pure sources are compiled
# again into build/, apart from the PGXS objects: `make fuzz` with clang and libFuzzer
# (FUZZ_SECONDS per target, default 60), `make fuzz-replay` (part of `make unit`) with g++ and
# a plain main() that replays the seed corpus and the kept crash inputs under ASan and UBSan.
.PHONY: fuzz fuzz-build fuzz-replay
FUZZ_TARGETS = $(filter-out replay_main,$(basename $(notdir $(wildcard test/fuzz/*.cpp))))
FUZZ_SECONDS ?= 60
FUZZ_CXX ?= clang++
FUZZ_HEADERS = $(AMEBO_HEADERS) $(wildcard test/fuzz/*.hpp)
FUZZ_CPPFLAGS = -std=c++17 -g -O1 -fno-omit-frame-pointer -I$(srcdir)/src -I$(srcdir)/test/fuzz \
	-isystem $(VALIJSON_INCLUDE) -DAMEBO_PURE_CXX
FUZZ_LIBS = -lcurl -lcrypto
LIBFUZZER_OBJS = $(PURE_SRCS:%.cpp=build/fuzz/%.o)
REPLAY_OBJS = $(PURE_SRCS:%.cpp=build/fuzz-replay/%.o)
REPLAY_SANITIZE = -fsanitize=address,undefined -fno-sanitize-recover=all
# g++ warns "maybe uninitialized" inside libstdc++'s <regex> when sanitizing; a false alarm.
REPLAY_WARNINGS = -Wall -Wextra -Werror -Wno-maybe-uninitialized
EXTRA_CLEAN += build/fuzz build/fuzz-replay

fuzz: fuzz-build
	bash test/fuzz/run.sh build/fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)
fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/%)
build/fuzz/%.o: %.cpp $(FUZZ_HEADERS) $(VALIJSON_INCLUDE)/valijson/validator.hpp
	@mkdir -p $(dir $@)
	$(FUZZ_CXX) $(FUZZ_CPPFLAGS) -fsanitize=fuzzer-no-link,address,undefined -c -o $@ $<
build/fuzz/%: test/fuzz/%.cpp $(LIBFUZZER_OBJS) $(FUZZ_HEADERS)
	$(FUZZ_CXX) $(FUZZ_CPPFLAGS) -fsanitize=fuzzer,address,undefined -o $@ $< \
		$(LIBFUZZER_OBJS) $(FUZZ_LIBS)

fuzz-replay: $(FUZZ_TARGETS:%=build/fuzz-replay/%)
	@for target in $(FUZZ_TARGETS); do \
		build/fuzz-replay/$$target test/fuzz/corpus/$$target test/fuzz/regressions/$$target \
			|| exit 1; \
	done
build/fuzz-replay/%.o: %.cpp $(FUZZ_HEADERS) $(VALIJSON_INCLUDE)/valijson/validator.hpp
	@mkdir -p $(dir $@)
	$(CXX) $(FUZZ_CPPFLAGS) $(REPLAY_WARNINGS) $(REPLAY_SANITIZE) -c -o $@ $<
build/fuzz-replay/%: test/fuzz/%.cpp build/fuzz-replay/test/fuzz/replay_main.o $(REPLAY_OBJS) \
		$(FUZZ_HEADERS)
	$(CXX) $(FUZZ_CPPFLAGS) $(REPLAY_WARNINGS) $(REPLAY_SANITIZE) -o $@ $< \
		build/fuzz-replay/test/fuzz/replay_main.o $(REPLAY_OBJS) $(FUZZ_LIBS)
