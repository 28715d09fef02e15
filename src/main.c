/* clickloop: command line and wiring. Only this file decides what to print. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cl_version.h"
#include "clickloop/log.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: clickloop --config FILE\n"
            "       clickloop --check-config FILE\n"
            "       clickloop --version | --help\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "c:C:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'V':
            printf("clickloop %s\n", CL_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    usage(stderr);
    return 2;
}
