# One helper per kind of target, used by every module's CMakeLists.txt.
set(MAILREPL_WARNINGS -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC-only names (clang rejects -Wno-maybe-uninitialized as unknown).
  list(APPEND MAILREPL_WARNINGS -Wno-maybe-uninitialized -Wno-mismatched-new-delete)
elseif(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  # Checks the lock annotations (ABSL_GUARDED_BY and friends, common/mutex.h).
  list(APPEND MAILREPL_WARNINGS -Wthread-safety)
endif()

# mailrepl_library(NAME SRCS a.cc b.cc DEPS x y)
function(mailrepl_library NAME)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${NAME} STATIC ${ARG_SRCS})
  target_include_directories(${NAME} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${NAME} PRIVATE ${MAILREPL_WARNINGS})
  target_link_libraries(${NAME} PUBLIC ${ARG_DEPS})
endfunction()

# mailrepl_binary(NAME SRCS main.cc DEPS x y)
function(mailrepl_binary NAME)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${NAME} ${ARG_SRCS})
  target_include_directories(${NAME} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${NAME} PRIVATE ${MAILREPL_WARNINGS})
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS})
  set_target_properties(${NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/bin)
endfunction()

# mailrepl_test(NAME SRCS a_test.cc DEPS x y): a Catch2 v2 binary registered with CTest
# (with MAILREPL_ONLY_TESTS set: only if NAME is in it, labelled `selected`).
function(mailrepl_test NAME)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${NAME} ${ARG_SRCS})
  target_include_directories(${NAME} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${NAME} PRIVATE ${MAILREPL_WARNINGS})
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS} catch_main Catch2::Catch2)
  set_target_properties(${NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  if(MAILREPL_ONLY_TESTS)
    if(NOT NAME IN_LIST MAILREPL_ONLY_TESTS)
      # Not built by default and not registered (see MAILREPL_ONLY_TESTS).
      set_target_properties(${NAME} PROPERTIES EXCLUDE_FROM_ALL ON)
      return()
    endif()
  endif()
  add_test(NAME ${NAME} COMMAND ${NAME})
  set_tests_properties(${NAME} PROPERTIES ENVIRONMENT "MAILREPL_BIN=${PROJECT_BINARY_DIR}/bin")
  if(MAILREPL_ONLY_TESTS)
    # Tests registered by plain add_test() lack it: `ctest -L '^selected$'`
    # runs exactly the listed ones.
    set_tests_properties(${NAME} PROPERTIES LABELS selected)
  endif()
endfunction()

# mailrepl_fuzzer(NAME SRCS x_fuzzer.cc DEPS x y): a libFuzzer binary in
# fuzz/ of a MAILREPL_FUZZ build, built by the `fuzzers` target (not by
# default). Its seeds are test/fuzz/corpus/NAME/ (scripts/fuzz.sh).
function(mailrepl_fuzzer NAME)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${NAME} EXCLUDE_FROM_ALL ${ARG_SRCS})
  target_include_directories(${NAME} PRIVATE ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  target_compile_options(${NAME} PRIVATE ${MAILREPL_WARNINGS})
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS})
  target_link_options(${NAME} PRIVATE -fsanitize=fuzzer)
  set_target_properties(${NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/fuzz)
  add_dependencies(fuzzers ${NAME})
endfunction()
