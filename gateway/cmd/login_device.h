/* The device authorization grant (RFC 8628) of `certgate login --headless`:
 * for a machine with no browser. The user code and the verification URL
 * are printed on stderr; the token endpoint is polled at the provider's
 * interval (5 s unless it says otherwise), 5 s slower after each
 * slow_down, until approval, denial, expiry or the deadline. */
#ifndef GW_LOGIN_DEVICE_H
#define GW_LOGIN_DEVICE_H

#include <stddef.h>

#include "cmd/login_oidc.h"

/* The ID token (malloc'd into *id_token), or -1 with a one-line reason. */
int login_device_flow(const login_client_t *client, char **id_token, char *err, size_t errlen)
        __attribute__((warn_unused_result));

#endif
