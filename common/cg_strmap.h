/* String-keyed hash map (open addressing). Keys are copied; values are the
 * caller's. Used for per-user session counts, trust feed, locks. */
#ifndef CG_STRMAP_H
#define CG_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct cg_strmap cg_strmap_t;

cg_strmap_t *cg_strmap_create(void);
/* free_value (may be NULL) is called on every value still in the map. */
void cg_strmap_destroy(cg_strmap_t *map, void (*free_value)(void *));

void *cg_strmap_get(const cg_strmap_t *map, const char *key);
/* Inserts or replaces; returns the replaced value (or NULL). Aborts on OOM. */
void *cg_strmap_put(cg_strmap_t *map, const char *key, void *value);
/* Removes key; returns its value (or NULL when absent). */
void *cg_strmap_remove(cg_strmap_t *map, const char *key);
size_t cg_strmap_count(const cg_strmap_t *map);

/* Calls fn for every entry; fn must not modify the map. Stops early when fn
 * returns false. */
void cg_strmap_foreach(const cg_strmap_t *map, bool (*fn)(const char *key, void *value, void *arg),
                       void *arg);
/* Calls fn with every key; fn must not modify the map. */
void cg_strmap_foreach_key(const cg_strmap_t *map, void (*fn)(void *ctx, const char *key),
                           void *ctx);

#endif
