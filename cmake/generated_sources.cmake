# generated_sources.cmake: the C sources generated from the Python package,
# for the daemon's build and the fuzz build alike (include() it, then use
# OTPD_GENERATED_SOURCES).  Needs OTPD_ROOT, the source tree's root.
#
# The Lua scripts (python/otpd/lua: every .lua file of the directory) and the
# tables shared with the Python side (python/otpd/data: the short calling
# codes for route.c, the Twilio error hints, the message texts by locale)
# live once, in the package, and are compiled in from there.
file(GLOB OTPD_LUA_FILES CONFIGURE_DEPENDS ${OTPD_ROOT}/python/otpd/lua/*.lua)
set(OTPD_LUA_SCRIPTS "")
foreach(f ${OTPD_LUA_FILES})
  get_filename_component(name ${f} NAME_WE)
  list(APPEND OTPD_LUA_SCRIPTS ${name})
endforeach()
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/lua_scripts.c
  COMMAND ${CMAKE_COMMAND} -DOUT=${CMAKE_BINARY_DIR}/lua_scripts.c
          -DSCRIPTS_DIR=${OTPD_ROOT}/python/otpd/lua "-DSCRIPTS=${OTPD_LUA_SCRIPTS}"
          -P ${OTPD_ROOT}/cmake/embed_lua.cmake
  DEPENDS ${OTPD_LUA_FILES} ${OTPD_ROOT}/cmake/embed_lua.cmake
  COMMENT "Embedding the Lua scripts"
  VERBATIM)
set(OTPD_GENERATED_SOURCES ${CMAKE_BINARY_DIR}/lua_scripts.c)

# The message texts by locale (python/otpd/data/templates/<locale>/*), for
# templates.c; any file added or changed there re-runs the embedding.
file(GLOB_RECURSE OTPD_TEMPLATE_FILES CONFIGURE_DEPENDS ${OTPD_ROOT}/python/otpd/data/templates/*)
add_custom_command(
  OUTPUT ${CMAKE_BINARY_DIR}/templates_builtin.c
  COMMAND ${CMAKE_COMMAND} -DDIR=${OTPD_ROOT}/python/otpd/data/templates
          -DOUT=${CMAKE_BINARY_DIR}/templates_builtin.c -P ${OTPD_ROOT}/cmake/embed_templates.cmake
  DEPENDS ${OTPD_TEMPLATE_FILES} ${OTPD_ROOT}/cmake/embed_templates.cmake
  COMMENT "Embedding python/otpd/data/templates"
  VERBATIM)
list(APPEND OTPD_GENERATED_SOURCES ${CMAKE_BINARY_DIR}/templates_builtin.c)

foreach(f calling_codes.txt twilio_errors.tsv)
  get_filename_component(kind ${f} NAME_WE)
  add_custom_command(
    OUTPUT ${CMAKE_BINARY_DIR}/${kind}.c
    COMMAND ${CMAKE_COMMAND} -DKIND=${kind} -DDATA=${OTPD_ROOT}/python/otpd/data/${f}
            -DOUT=${CMAKE_BINARY_DIR}/${kind}.c -P ${OTPD_ROOT}/cmake/embed_data.cmake
    DEPENDS ${OTPD_ROOT}/python/otpd/data/${f} ${OTPD_ROOT}/cmake/embed_data.cmake
    COMMENT "Embedding python/otpd/data/${f}"
    VERBATIM)
  list(APPEND OTPD_GENERATED_SOURCES ${CMAKE_BINARY_DIR}/${kind}.c)
endforeach()
