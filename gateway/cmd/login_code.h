/* The authorization code flow with PKCE and a loopback redirect (RFC 8252,
 * RFC 7636): a libmicrohttpd listener on 127.0.0.1, a free port, receives
 * the browser's redirect; the URL is printed ("Open URL" on a line of its
 * own, on stderr) and handed to xdg-open/open when there is a desktop. */
#ifndef GW_LOGIN_CODE_H
#define GW_LOGIN_CODE_H

#include <stddef.h>

#include "cmd/login_oidc.h"

/* The ID token (malloc'd into *id_token), or -1 with a one-line reason:
 * the provider's error or denial, a mix-up (iss), a nonce not ours, the
 * deadline. A callback whose state is not this login's is answered 400
 * and ignored (a warning on stderr): the login keeps waiting. */
int login_code_flow(const login_client_t *client, char **id_token, char *err, size_t errlen)
        __attribute__((warn_unused_result));

#endif
