/* The state store's connection string, made safe for a non-blocking
 * connect (see state_pg.h).
 *
 * PQconnectStart looks host names up with getaddrinfo, which blocks; on
 * the loop that would stall every session. So the gateway resolves names
 * itself on the thread pool (uv_getaddrinfo, state_pg.c) and hands libpq
 * every name paired with each of its addresses (host=NAME hostaddr=ADDR:
 * libpq connects to ADDR and still checks the server certificate against
 * NAME under sslmode=verify-full). A socket folder (host=/run/postgresql)
 * and a given hostaddr need no lookup. The other options go to libpq as
 * written, with the gateway's defaults where they are not: an application
 * name a DBA can recognize, TCP keepalives so a store that vanished from
 * the network is noticed while idle, and no GSSAPI encryption (its
 * Kerberos exchange would block). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "state/state_pg.h"

/* Options the gateway sets unless the connection string does. GSSAPI
 * encryption is off: with a Kerberos credential cache around, libpq's
 * default (prefer) would ask the KDC, which blocks. */
static const char *const defaults[][2] = {
        {"application_name", "certgate"}, {"keepalives", "1"},       {"keepalives_idle", "10"},
        {"keepalives_interval", "5"},     {"keepalives_count", "3"}, {"tcp_user_timeout", "15000"},
        {"gssencmode", "disable"},
};
#define N_DEFAULTS (sizeof(defaults) / sizeof(defaults[0]))

/* The n-th entry of a libpq list ("a,b,c"), as a new string ("" for an
 * empty entry); NULL when out of memory. */
static char *list_entry(const char *list, size_t n)
{
	const char *p = list;
	for (size_t i = 0; i < n; i++) {
		p = strchr(p, ',');
		if (p == NULL)
			return strdup("");
		p++;
	}
	return strndup(p, strcspn(p, ","));
}

static size_t list_count(const char *v)
{
	size_t n = 1;
	for (; *v != '\0'; v++)
		n += *v == ',';
	return n;
}

void gw_pg_dsn_finish(gw_pg_dsn_t *dsn)
{
	for (size_t i = 0; i < dsn->n; i++) {
		free(dsn->keywords[i]);
		free(dsn->values[i]);
	}
	free(dsn->keywords);
	free(dsn->values);
	for (size_t i = 0; i < dsn->n_hosts; i++) {
		free(dsn->hosts[i].host);
		free(dsn->hosts[i].hostaddr);
		free(dsn->hosts[i].port);
	}
	free(dsn->hosts);
	memset(dsn, 0, sizeof(*dsn));
}

/* The host entries from the host, hostaddr and port lists. */
static bool split_hosts(gw_pg_dsn_t *dsn, const char *host, const char *hostaddr, const char *port)
{
	size_t n = host != NULL ? list_count(host) : hostaddr != NULL ? list_count(hostaddr) : 1;
	size_t n_ports = port != NULL ? list_count(port) : 0;
	dsn->hosts = calloc(n, sizeof(*dsn->hosts));
	if (dsn->hosts == NULL)
		return false;
	dsn->n_hosts = n;
	for (size_t i = 0; i < n; i++) {
		gw_pg_host_t *h = &dsn->hosts[i];
		if ((host != NULL && (h->host = list_entry(host, i)) == NULL) ||
		    (hostaddr != NULL && (h->hostaddr = list_entry(hostaddr, i)) == NULL) ||
		    (port != NULL && (h->port = list_entry(port, n_ports == 1 ? 0 : i)) == NULL))
			return false;
		bool socket = h->host != NULL && (h->host[0] == '/' || h->host[0] == '@');
		bool addr = h->hostaddr != NULL && h->hostaddr[0] != '\0';
		h->resolve = h->host != NULL && h->host[0] != '\0' && !socket && !addr;
	}
	return true;
}

bool gw_pg_dsn_parse(gw_pg_dsn_t *dsn, const char *conninfo, const char *env_host, char *err,
                     size_t errlen)
{
	memset(dsn, 0, sizeof(*dsn));
	char *why = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &why);
	if (opts == NULL) {
		snprintf(err, errlen, "state.dsn: %s", why != NULL ? why : "out of memory");
		PQfreemem(why);
		return false;
	}
	size_t total = N_DEFAULTS;
	for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
		total++;
	dsn->keywords = calloc(total, sizeof(*dsn->keywords));
	dsn->values = calloc(total, sizeof(*dsn->values));
	const char *host = NULL, *hostaddr = NULL, *port = NULL;
	bool ok = dsn->keywords != NULL && dsn->values != NULL;
	for (PQconninfoOption *o = opts; ok && o->keyword != NULL; o++) {
		if (o->val == NULL)
			continue;
		if (strcmp(o->keyword, "host") == 0) {
			host = o->val;
		} else if (strcmp(o->keyword, "hostaddr") == 0) {
			hostaddr = o->val;
		} else if (strcmp(o->keyword, "port") == 0) {
			port = o->val;
		} else {
			dsn->keywords[dsn->n] = strdup(o->keyword);
			dsn->values[dsn->n] = strdup(o->val);
			ok = dsn->keywords[dsn->n] != NULL && dsn->values[dsn->n] != NULL;
			dsn->n++;
		}
	}
	for (size_t d = 0; ok && d < N_DEFAULTS; d++) {
		bool given = false;
		for (size_t i = 0; i < dsn->n && !given; i++)
			given = strcmp(dsn->keywords[i], defaults[d][0]) == 0;
		if (given)
			continue;
		dsn->keywords[dsn->n] = strdup(defaults[d][0]);
		dsn->values[dsn->n] = strdup(defaults[d][1]);
		ok = dsn->keywords[dsn->n] != NULL && dsn->values[dsn->n] != NULL;
		dsn->n++;
	}
	/* without a host, libpq would take PGHOST: a name there is looked up
	 * as well */
	if (host == NULL && hostaddr == NULL && env_host != NULL && env_host[0] != '\0')
		host = env_host;
	if (ok)
		ok = split_hosts(dsn, host, hostaddr, port);
	PQconninfoFree(opts);
	if (!ok) {
		snprintf(err, errlen, "out of memory");
		gw_pg_dsn_finish(dsn);
	}
	return ok;
}

void gw_pg_params_finish(gw_pg_params_t *p)
{
	free(p->keywords);
	free(p->values);
	free(p->host);
	free(p->hostaddr);
	free(p->port);
	memset(p, 0, sizeof(*p));
}

/* Appends entry to a comma list being built in *list (len used). */
static bool list_add(char **list, size_t *len, const char *entry)
{
	size_t n = strlen(entry);
	char *grown = realloc(*list, *len + n + 2);
	if (grown == NULL)
		return false;
	if (*len > 0)
		grown[(*len)++] = ',';
	memcpy(grown + *len, entry, n);
	*len += n;
	grown[*len] = '\0';
	*list = grown;
	return true;
}

int gw_pg_params_build(const gw_pg_dsn_t *dsn, const gw_pg_resolved_t *resolved,
                       gw_pg_params_t *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	size_t hl = 0, al = 0, pl = 0, entries = 0;
	bool any_host = false, any_addr = false, any_port = false, ok = true;
	for (size_t i = 0; ok && i < dsn->n_hosts; i++) {
		const gw_pg_host_t *h = &dsn->hosts[i];
		size_t n = h->resolve ? resolved[i].n : 1;
		for (size_t k = 0; ok && k < n; k++) {
			const char *addr = h->resolve ? resolved[i].addrs[k]
			                              : (h->hostaddr != NULL ? h->hostaddr : "");
			ok = list_add(&out->host, &hl, h->host != NULL ? h->host : "") &&
			     list_add(&out->hostaddr, &al, addr) &&
			     list_add(&out->port, &pl, h->port != NULL ? h->port : "");
			any_host |= h->host != NULL;
			any_addr |= addr[0] != '\0';
			any_port |= h->port != NULL;
			entries++;
		}
	}
	if (ok && entries == 0) {
		/* every name failed to resolve: say why for the first one */
		for (size_t i = 0; i < dsn->n_hosts; i++) {
			if (dsn->hosts[i].resolve) {
				snprintf(err, errlen, "cannot resolve %s: %s", dsn->hosts[i].host,
				         resolved[i].error[0] != '\0' ? resolved[i].error
				                                      : "no address");
				break;
			}
		}
		gw_pg_params_finish(out);
		return -1;
	}
	out->keywords = calloc(dsn->n + 4, sizeof(*out->keywords));
	out->values = calloc(dsn->n + 4, sizeof(*out->values));
	if (!ok || out->keywords == NULL || out->values == NULL) {
		snprintf(err, errlen, "out of memory");
		gw_pg_params_finish(out);
		return -1;
	}
	for (size_t i = 0; i < dsn->n; i++) {
		out->keywords[out->n] = dsn->keywords[i];
		out->values[out->n++] = dsn->values[i];
	}
	/* lists that would be all empty are left out: libpq's own default */
	if (any_host) {
		out->keywords[out->n] = "host";
		out->values[out->n++] = out->host;
	}
	if (any_addr) {
		out->keywords[out->n] = "hostaddr";
		out->values[out->n++] = out->hostaddr;
	}
	if (any_port) {
		out->keywords[out->n] = "port";
		out->values[out->n++] = out->port;
	}
	return 0;
}
