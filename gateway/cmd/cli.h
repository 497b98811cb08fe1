/* Subcommand entry points: each takes argv with argv[0] = the subcommand
 * name and returns the process exit code (0 ok, 1 refused, 2 usage). */
#ifndef GW_CLI_H
#define GW_CLI_H

int gw_serve_main(int argc, char **argv);
int gw_connect_main(int argc, char **argv);
int gw_check_main(int argc, char **argv);
int gw_explain_main(int argc, char **argv);
int gw_test_main(int argc, char **argv);
int gw_health_main(int argc, char **argv);
int gw_ca_main(int argc, char **argv);
int gw_login_main(int argc, char **argv);
int gw_status_main(int argc, char **argv);
int gw_audit_main(int argc, char **argv);
int gw_services_main(int argc, char **argv);
int gw_request_main(int argc, char **argv);

#endif
