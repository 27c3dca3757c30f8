# lanyard_protoc_c(<out-var> <proto>...): runs protoc-c on each .proto at
# build time; the generated .pb-c.c/.pb-c.h stay in the build tree.
find_program(PROTOC_C protoc-c REQUIRED)
set(LANYARD_PROTO_SYSTEM_INCLUDE /usr/include CACHE PATH "where google/protobuf/*.proto live")

function(lanyard_protoc_c out_var)
  set(sources)
  foreach(proto ${ARGN})
    get_filename_component(abs ${proto} ABSOLUTE)
    get_filename_component(dir ${abs} DIRECTORY)
    get_filename_component(name ${abs} NAME_WE)
    # Files under google/protobuf keep their package path.
    if(abs MATCHES "${LANYARD_PROTO_SYSTEM_INCLUDE}/(.*)/[^/]*\\.proto$")
      set(rel ${CMAKE_MATCH_1})
      set(incdir ${LANYARD_PROTO_SYSTEM_INCLUDE})
    else()
      set(rel "")
      set(incdir ${dir})
    endif()
    if(rel)
      set(outdir ${CMAKE_CURRENT_BINARY_DIR}/${rel})
    else()
      set(outdir ${CMAKE_CURRENT_BINARY_DIR})
    endif()
    set(c ${outdir}/${name}.pb-c.c)
    set(h ${outdir}/${name}.pb-c.h)
    add_custom_command(
      OUTPUT ${c} ${h}
      COMMAND ${PROTOC_C} --c_out=${CMAKE_CURRENT_BINARY_DIR}
              -I${incdir} -I${LANYARD_PROTO_SYSTEM_INCLUDE} -I${CMAKE_CURRENT_SOURCE_DIR} ${abs}
      DEPENDS ${abs}
      COMMENT "protoc-c ${name}.proto"
      VERBATIM)
    list(APPEND sources ${c})
  endforeach()
  set(${out_var} ${sources} PARENT_SCOPE)
endfunction()
