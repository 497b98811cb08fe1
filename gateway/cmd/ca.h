/* `certgate ca init|issue|server|revoke`: a development CA (ECDSA P-256).
 * Not for production: it exists so a demo and the tests can mint short-lived
 * login certificates with claims in the default places (CONFIG.md). */
#ifndef GW_CA_H
#define GW_CA_H

/* argv[0] is "ca"; returns the process exit code (0 ok, 1 refused, 2 usage). */
int gw_ca_main(int argc, char **argv);

#endif
