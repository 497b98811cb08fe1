/* certgate: subcommand dispatch (filled in as subcommands land). */
#include <stdio.h>
#include <string.h>

#include "ca.h"

int main(int argc, char **argv)
{
	if (argc >= 2 && strcmp(argv[1], "ca") == 0)
		return gw_ca_main(argc - 1, argv + 1);
	fprintf(stderr, "usage: certgate <serve|connect|check|explain|ca|health|version> ...\n");
	return 2;
}
