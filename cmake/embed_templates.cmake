# embed_templates.cmake: the message texts of python/otpd/data/templates,
# which the Python side reads from its package, compiled into the daemon, so
# both send the very same words.  Run as
#   cmake -DDIR=python/otpd/data/templates -DOUT=file.c -P embed_templates.cmake
#
# DIR holds one directory per locale, named by its normalised BCP 47 tag
# ("en", "pt-BR", "zh-Hant"), each with some of sms.txt, voice.txt,
# email_subject.txt, email.txt and email.html (README.md says more).  Files
# at the top (the README) are skipped.  Each text becomes a byte array, so
# UTF-8 and quotes pass untouched, and one row of
#   const struct template_builtin templates_builtin[] = {{locale, kind, text}, ...}
# (templates.h), sorted by locale and kind.  The texts are the files' bytes
# as they are: templates.c strips the final newline, for these and for
# OTPD_TEMPLATES_DIR's files alike, and checks them at start.  A directory
# whose name is not a tag, an unknown file name or an empty directory stops
# the build with its path.
cmake_policy(VERSION 3.18)

foreach(v DIR OUT)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "embed_templates.cmake: -D${v}= is required")
  endif()
endforeach()

set(kinds sms.txt voice.txt email_subject.txt email.txt email.html)
set(enums TEMPLATE_SMS TEMPLATE_VOICE TEMPLATE_EMAIL_SUBJECT TEMPLATE_EMAIL_TEXT
          TEMPLATE_EMAIL_HTML)

file(GLOB entries RELATIVE "${DIR}" "${DIR}/*")
list(SORT entries)
set(texts "")
set(rows "")
set(count 0)
foreach(loc IN LISTS entries)
  if(NOT IS_DIRECTORY "${DIR}/${loc}")
    continue()
  endif()
  # The normalised form only (job_locale_normalize's): "pt-BR", not "pt_br".
  if(NOT loc MATCHES "^[a-z][a-z][a-z]?(-[A-Z][a-z][a-z][a-z])?(-[A-Z][A-Z]|-[0-9][0-9][0-9])?$")
    message(FATAL_ERROR "${DIR}/${loc}: not a normalised BCP 47 tag such as en, pt-BR, zh-Hant")
  endif()
  file(GLOB files RELATIVE "${DIR}/${loc}" "${DIR}/${loc}/*")
  set(n 0)
  foreach(i RANGE 4)
    list(GET kinds ${i} name)
    list(GET enums ${i} kind)
    list(FIND files "${name}" at)
    if(at EQUAL -1)
      continue()
    endif()
    list(REMOVE_AT files ${at})
    file(READ "${DIR}/${loc}/${name}" hex HEX)
    string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
    string(APPEND texts "static const char t${count}[] = {${bytes}0x00};\n")
    string(APPEND rows "    {\"${loc}\", ${kind}, t${count}},\n")
    math(EXPR count "${count} + 1")
    math(EXPR n "${n} + 1")
  endforeach()
  if(files)
    message(FATAL_ERROR "${DIR}/${loc}: unknown file(s) ${files} (known: ${kinds})")
  endif()
  if(n EQUAL 0)
    message(FATAL_ERROR "${DIR}/${loc}: no template files")
  endif()
endforeach()

if(count EQUAL 0)
  message(FATAL_ERROR "${DIR}: no locale directories")
endif()
set(out "/* Generated from python/otpd/data/templates by cmake/embed_templates.cmake: do not edit. */\n")
string(APPEND out "#include <stddef.h>\n\n#include \"templates.h\"\n\n${texts}\n")
string(APPEND out "const struct template_builtin templates_builtin[] = {\n${rows}};\n")
string(APPEND out "const size_t templates_builtin_count = ${count};\n")
file(WRITE "${OUT}.tmp" "${out}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
