# amebo: build with PGXS.  `make`, `make install`, `make installcheck` (needs a server
# binary; runs on its own temporary cluster).  The full test run: test/run-all.sh.
EXTENSION = amebo
MODULE_big = amebo
DATA = sql/amebo--1.0.sql sql/amebo--1.0--1.1.sql sql/amebo--1.1--1.2.sql sql/amebo--1.2--1.3.sql \
	sql/amebo--1.3--1.4.sql
PG_CONFIG ?= pg_config

# Pure C++ modules: compiled without PostgreSQL's include path, so they cannot include it.
PURE_SRCS = $(wildcard src/core/*.cpp src/core/*/*.cpp)
PG_SRCS = $(wildcard src/*.cpp src/pg/*.cpp src/store/*.cpp src/registry/*.cpp src/state/*.cpp \
	src/delivery/*.cpp src/worker/*.cpp)
PURE_OBJS = $(PURE_SRCS:.cpp=.o)
OBJS = $(PG_SRCS:.cpp=.o) $(PURE_OBJS)
AMEBO_HEADERS = $(wildcard src/*.hpp src/*/*.hpp src/*/*/*.hpp)

PG_CPPFLAGS = -I$(srcdir)/src
PG_CXXFLAGS = -std=c++17 -Wall -Wextra -Wno-register -Wno-unused-parameter \
	-Wno-missing-field-initializers -fno-omit-frame-pointer $(AMEBO_WERROR)
SHLIB_LINK = -lcurl -lcrypto -lstdc++

REGRESS = setup border append read_stream read_all immutability bad_input registry validation \
	state projections subscriptions privileges upgrade
REGRESS_OPTS = --temp-instance=tmp_check --temp-config=$(srcdir)/test/amebo.conf --load-extension=amebo
ISOLATION = append_race retry_race read_all_gap schema_cache
ISOLATION_OPTS = --temp-instance=tmp_check_iso --temp-config=$(srcdir)/test/amebo.conf \
	--inputdir=$(srcdir)/test/isolation --outputdir=test/isolation --load-extension=amebo

# PostgreSQL is built with LLVM; its bitcode rule would compile C++17 without our flags.
override with_llvm = no

PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# valijson's headers, unpacked from Debian's package by test/lib/setup-machine.sh.
VALIJSON_INCLUDE = $(srcdir)/.deps/valijson/usr/include
$(PURE_OBJS): override CPPFLAGS = -I$(srcdir)/src -isystem $(VALIJSON_INCLUDE) -DAMEBO_PURE_CXX
$(VALIJSON_INCLUDE)/valijson/validator.hpp:
	@echo "valijson's headers are missing: run bash test/lib/setup-machine.sh" >&2; exit 1
src/core/schema/json_schema.o: $(VALIJSON_INCLUDE)/valijson/validator.hpp
$(OBJS): $(AMEBO_HEADERS)

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
format:
	clang-format -i $(PG_SRCS) $(PURE_SRCS) $(AMEBO_HEADERS)
format-check:
	clang-format --dry-run --Werror $(PG_SRCS) $(PURE_SRCS) $(AMEBO_HEADERS)

# Unit tests of the pure C++ modules: a plain program, no PostgreSQL server needed.
.PHONY: unit
EXTRA_CLEAN += test/unit/delivery_test
unit: test/unit/delivery_test
	./test/unit/delivery_test
test/unit/delivery_test: test/unit/delivery_test.cpp $(PURE_OBJS) $(AMEBO_HEADERS)
	$(CXX) -std=c++17 -Wall -Wextra -Werror -I$(srcdir)/src -isystem $(VALIJSON_INCLUDE) \
		-DAMEBO_PURE_CXX -o $@ $(filter %.cpp %.o,$^) -lcrypto
