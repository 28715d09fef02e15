/* RFC 6901 JSON Pointers over json-c trees; see include/clickloop/json_pointer.h.
 * Compilation happens at configuration time; resolution runs once per mapped
 * field of every event and allocates nothing. */
#include "clickloop/json_pointer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json_object.h>

/* Token that is not a canonical array index: matches no array element. */
#define NOT_AN_INDEX SIZE_MAX

typedef struct {
    const char *key; /* unescaped, NUL-terminated, inside cl_json_pointer_s.keys */
    size_t index;    /* the token read as an array index, or NOT_AN_INDEX */
} pointer_token_t;

struct cl_json_pointer_s {
    char *text;
    char *keys;
    pointer_token_t *tokens;
    size_t count;
};

int cl_json_pointer_validate(const char *p, char err[CL_ERR_LEN])
{
    if (p[0] != '\0' && p[0] != '/')
        return cl_errorf(err, "JSON Pointer \"%s\" must be empty or start with '/'", p);
    for (size_t i = 0; p[i] != '\0'; i++) {
        if (p[i] == '~' && p[i + 1] != '0' && p[i + 1] != '1')
            return cl_errorf(err,
                             "JSON Pointer \"%s\" has '~' at byte %zu not followed by 0 or 1 "
                             "(write ~0 for '~' and ~1 for '/')",
                             p, i);
    }
    return CL_OK;
}

/* RFC 6901 section 4: "0" or a decimal number without leading zeros. */
static size_t parse_array_index(const char *token)
{
    if (token[0] < '0' || token[0] > '9' || (token[0] == '0' && token[1] != '\0'))
        return NOT_AN_INDEX;
    size_t value = 0;
    for (const char *c = token; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return NOT_AN_INDEX;
        size_t digit = (size_t)(*c - '0');
        if (value > (NOT_AN_INDEX - 1 - digit) / 10)
            return NOT_AN_INDEX;
        value = value * 10 + digit;
    }
    return value;
}

int cl_json_pointer_compile(const char *p, cl_json_pointer_t **out, char err[CL_ERR_LEN])
{
    if (cl_json_pointer_validate(p, err) != CL_OK)
        return CL_ERR;

    size_t len = strlen(p);
    cl_json_pointer_t *ptr = cl_xcalloc(1, sizeof *ptr);
    ptr->text = cl_xstrndup(p, len);
    for (size_t i = 0; i < len; i++)
        ptr->count += p[i] == '/';
    ptr->tokens = cl_xcalloc(ptr->count, sizeof *ptr->tokens);
    /* Each '/' becomes a key's terminating NUL and escapes only shrink, so the
     * unescaped keys fit in as many bytes as the pointer text. */
    ptr->keys = cl_xmalloc(len + 1);

    char *w = ptr->keys;
    size_t n = 0;
    for (size_t i = 0; i < len;) {
        i++; /* the '/' */
        ptr->tokens[n].key = w;
        char *start = w;
        while (i < len && p[i] != '/') {
            if (p[i] == '~') {
                *w++ = p[i + 1] == '0' ? '~' : '/';
                i += 2;
            } else {
                *w++ = p[i++];
            }
        }
        *w++ = '\0';
        ptr->tokens[n].index = parse_array_index(start);
        n++;
    }
    *out = ptr;
    return CL_OK;
}

void cl_json_pointer_free(cl_json_pointer_t *ptr)
{
    if (ptr == NULL)
        return;
    free(ptr->text);
    free(ptr->keys);
    free(ptr->tokens);
    free(ptr);
}

const char *cl_json_pointer_text(const cl_json_pointer_t *ptr)
{
    return ptr->text;
}

bool cl_json_pointer_resolve(const cl_json_pointer_t *ptr, struct json_object *root,
                             struct json_object **value)
{
    struct json_object *cur = root;
    for (size_t i = 0; i < ptr->count; i++) {
        const pointer_token_t *t = &ptr->tokens[i];
        switch (json_object_get_type(cur)) {
        case json_type_object:
            if (!json_object_object_get_ex(cur, t->key, &cur))
                return false;
            break;
        case json_type_array:
            if (t->index == NOT_AN_INDEX || t->index >= json_object_array_length(cur))
                return false;
            cur = json_object_array_get_idx(cur, t->index);
            break;
        default:
            return false;
        }
    }
    *value = cur;
    return true;
}
