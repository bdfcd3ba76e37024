# embed_lua.cmake: the Lua scripts of python/otpd/lua, which the Python
# client reads from its package, compiled into the daemon as C strings, so
# both sides run the very same text.  Run as
#   cmake -DOUT=file.c -DSCRIPTS_DIR=dir -DSCRIPTS="a;b" -P embed_lua.cmake
# Each file becomes `const char lua_<name>[]`, NUL-terminated.
set(out "/* Generated from python/otpd/lua by cmake/embed_lua.cmake: do not edit. */\n")
foreach(name IN LISTS SCRIPTS)
  file(READ "${SCRIPTS_DIR}/${name}.lua" hex HEX)
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," bytes "${hex}")
  string(APPEND out "const char lua_${name}[] = {${bytes}0x00};\n")
endforeach()
file(WRITE "${OUT}.tmp" "${out}")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
