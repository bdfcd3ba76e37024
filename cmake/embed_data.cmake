# embed_data.cmake: a data file of python/otpd/data, which the Python side
# reads from its package, compiled into the daemon as a C array, so both
# sides use the very same table.  Run as
#   cmake -DKIND=<kind> -DDATA=file -DOUT=file.c -P embed_data.cmake
# KIND says what the file holds and what is generated:
#   calling_codes  one calling code per line (calling_codes.txt) ->
#                  const char *const calling_codes[], calling_codes_count (route.h)
#   twilio_errors  code TAB class TAB hint (twilio_errors.tsv) ->
#                  const struct twilio_error twilio_errors[], twilio_errors_count
#                  (twilio_errors.h)
# In both, blank lines and lines starting with # are skipped.  A malformed
# line stops the build with its file and line number.
#
# The file is walked with string(FIND), never as a CMake list, so that a
# ';' in a hint stays text.
cmake_policy(VERSION 3.18)

foreach(v KIND DATA OUT)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "embed_data.cmake: -D${v}= is required")
  endif()
endforeach()
get_filename_component(name "${DATA}" NAME)

if(KIND STREQUAL "calling_codes")
  set(header "route.h")
  set(array "const char *const calling_codes[] = {\n")
  set(count_decl "const size_t calling_codes_count")
elseif(KIND STREQUAL "twilio_errors")
  set(header "twilio_errors.h")
  set(array "const struct twilio_error twilio_errors[] = {\n")
  set(count_decl "const size_t twilio_errors_count")
else()
  message(FATAL_ERROR "embed_data.cmake: unknown KIND ${KIND}")
endif()

file(READ "${DATA}" text)
set(lineno 0)
set(count 0)
set(seen "")
while(NOT text STREQUAL "")
  string(FIND "${text}" "\n" nl)
  if(nl EQUAL -1)
    set(line "${text}")
    set(text "")
  else()
    string(SUBSTRING "${text}" 0 ${nl} line)
    math(EXPR nl "${nl} + 1")
    string(SUBSTRING "${text}" ${nl} -1 text)
  endif()
  math(EXPR lineno "${lineno} + 1")
  string(REGEX REPLACE "\r$" "" line "${line}")
  if(line STREQUAL "" OR line MATCHES "^#")
    continue()
  endif()

  if(KIND STREQUAL "calling_codes")
    if(NOT line MATCHES "^[1-9][0-9]?[0-9]?$")
      message(FATAL_ERROR "${name}:${lineno}: not a calling code (1 to 3 digits): ${line}")
    endif()
    set(code "${line}")
    string(APPEND array "    \"${code}\",\n")
  else()
    if(NOT line MATCHES "^([1-9][0-9]*)\t(job|provider|retry|carrier)\t([^\t]+)$")
      message(FATAL_ERROR "${name}:${lineno}: expected CODE<tab>job|provider|retry|carrier"
                          "<tab>hint: ${line}")
    endif()
    set(code "${CMAKE_MATCH_1}")
    string(TOUPPER "${CMAKE_MATCH_2}" cls)
    set(hint "${CMAKE_MATCH_3}")
    string(REPLACE "\\" "\\\\" hint "${hint}")
    string(REPLACE "\"" "\\\"" hint "${hint}")
    string(APPEND array "    {${code}, TWILIO_ERR_${cls}, \"${hint}\"},\n")
  endif()
  if(code IN_LIST seen)
    message(FATAL_ERROR "${name}:${lineno}: ${code} is listed twice")
  endif()
  list(APPEND seen "${code}")
  math(EXPR count "${count} + 1")
endwhile()

if(count EQUAL 0)
  message(FATAL_ERROR "${name}: no entries")
endif()
set(out "/* Generated from python/otpd/data/${name} by cmake/embed_data.cmake: do not edit. */\n")
string(APPEND out "#include <stddef.h>\n\n#include \"${header}\"\n\n")
string(APPEND out "${array}};\n${count_decl} = ${count};\n")
file(WRITE "${OUT}.tmp" "${out}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
