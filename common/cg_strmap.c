/* cg_strmap: string-keyed hash map with open addressing and linear probing.
 * Capacity is a power of two and the load factor stays at or below 0.7.
 * Removal uses backward-shift deletion, so there are no tombstones and probe
 * sequences never degrade under long insert/remove churn (session counts and
 * locks are added and removed for the life of the process).
 *
 * Keys are strdup'd and owned by the map; values belong to the caller.
 * Allocation failure aborts: callers hold no recovery path for "could not
 * count this session", and continuing with a partial map would be worse. */
#include "cg_strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MIN_CAP 16

struct slot {
	char *key; /* NULL: empty */
	void *value;
	uint64_t hash;
};

struct cg_strmap {
	struct slot *slots;
	size_t cap; /* power of two */
	size_t count;
};

/* FNV-1a, 64-bit. */
static uint64_t hash_key(const char *key)
{
	uint64_t h = UINT64_C(14695981039346656037);
	for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
		h ^= *p;
		h *= UINT64_C(1099511628211);
	}
	/* Fold the high bits in: the low bits alone index the table. */
	return h ^ (h >> 32);
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);
	if (!p)
		abort();
	return p;
}

cg_strmap_t *cg_strmap_create(void)
{
	cg_strmap_t *map = xcalloc(1, sizeof(*map));
	map->cap = MIN_CAP;
	map->slots = xcalloc(map->cap, sizeof(*map->slots));
	return map;
}

void cg_strmap_destroy(cg_strmap_t *map, void (*free_value)(void *))
{
	if (!map)
		return;
	for (size_t i = 0; i < map->cap; i++) {
		if (!map->slots[i].key)
			continue;
		free(map->slots[i].key);
		if (free_value)
			free_value(map->slots[i].value);
	}
	free(map->slots);
	free(map);
}

/* Slot holding key, or the empty slot where it would go. */
static size_t find_slot(const cg_strmap_t *map, const char *key, uint64_t hash)
{
	size_t mask = map->cap - 1;
	size_t i = (size_t)hash & mask;
	while (map->slots[i].key) {
		if (map->slots[i].hash == hash && strcmp(map->slots[i].key, key) == 0)
			return i;
		i = (i + 1) & mask;
	}
	return i;
}

static void grow(cg_strmap_t *map)
{
	struct slot *old = map->slots;
	size_t old_cap = map->cap;

	if (old_cap > SIZE_MAX / 2 / sizeof(*old))
		abort();
	map->cap = old_cap * 2;
	map->slots = xcalloc(map->cap, sizeof(*map->slots));
	size_t mask = map->cap - 1;
	for (size_t i = 0; i < old_cap; i++) {
		if (!old[i].key)
			continue;
		size_t j = (size_t)old[i].hash & mask;
		while (map->slots[j].key)
			j = (j + 1) & mask;
		map->slots[j] = old[i];
	}
	free(old);
}

void *cg_strmap_get(const cg_strmap_t *map, const char *key)
{
	size_t i = find_slot(map, key, hash_key(key));
	return map->slots[i].key ? map->slots[i].value : NULL;
}

void *cg_strmap_put(cg_strmap_t *map, const char *key, void *value)
{
	uint64_t hash = hash_key(key);
	size_t i = find_slot(map, key, hash);
	if (map->slots[i].key) {
		void *old = map->slots[i].value;
		map->slots[i].value = value;
		return old;
	}

	/* Keep count / cap <= 0.7 after the insert. */
	if ((map->count + 1) * 10 > map->cap * 7) {
		grow(map);
		i = find_slot(map, key, hash);
	}
	char *copy = strdup(key);
	if (!copy)
		abort();
	map->slots[i] = (struct slot){.key = copy, .value = value, .hash = hash};
	map->count++;
	return NULL;
}

void *cg_strmap_remove(cg_strmap_t *map, const char *key)
{
	size_t i = find_slot(map, key, hash_key(key));
	if (!map->slots[i].key)
		return NULL;

	void *value = map->slots[i].value;
	free(map->slots[i].key);
	map->count--;

	/* Backward shift: pull later entries of the probe run into the hole
	 * unless their home slot lies cyclically in (hole, j]. */
	size_t mask = map->cap - 1;
	size_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (!map->slots[j].key)
			break;
		size_t home = (size_t)map->slots[j].hash & mask;
		if (((j - home) & mask) < ((j - i) & mask))
			continue;
		map->slots[i] = map->slots[j];
		i = j;
	}
	map->slots[i] = (struct slot){0};
	return value;
}

size_t cg_strmap_count(const cg_strmap_t *map)
{
	return map->count;
}

void cg_strmap_foreach(const cg_strmap_t *map, bool (*fn)(const char *key, void *value, void *arg),
                       void *arg)
{
	for (size_t i = 0; i < map->cap; i++) {
		if (map->slots[i].key && !fn(map->slots[i].key, map->slots[i].value, arg))
			return;
	}
}

void cg_strmap_foreach_key(const cg_strmap_t *map, void (*fn)(void *ctx, const char *key),
                           void *ctx)
{
	for (size_t i = 0; i < map->cap; i++) {
		if (map->slots[i].key)
			fn(ctx, map->slots[i].key);
	}
}
