/* SPDX-License-Identifier: MIT */
/*
 * main: arguments and configuration (defaults < file < command line; errors exit 2), then
 * node_run (node.c), which wires the modules and runs the node.
 */
#include <stdio.h>
#include <string.h>

#include "config.h"

#include "arborkv/conf.h"
#include "arborkv/log.h"
#include "arborkv/node.h"

/* --version or --help: prints to stdout, returns the exit status (0). */
static int print_action(const char *action, const char *prog)
{
    if (strcmp(action, "version") == 0)
        printf("arborkv %s\n", ARBORKV_VERSION);
    else
        conf_print_usage(prog);
    return 0;
}

static int config_error(const struct conf_error *err)
{
    if (err->line > 0)
        fprintf(stderr, "%s:%d: %s\n", err->file, err->line, err->reason);
    else
        fprintf(stderr, "%s: %s\n", err->file, err->reason);
    return NODE_EXIT_CONFIG;
}

int main(int argc, char **argv)
{
    struct conf conf;
    struct conf_error err;
    int status = 1;
    memset(&err, 0, sizeof(err));
    conf_init(&conf);

    bool bad = false;
    const char *path = conf_config_path(argc, argv, &bad);
    const char *action = NULL;
    if (bad) {
        fprintf(stderr, "command line: option '--config' requires a value\n");
        status = NODE_EXIT_CONFIG;
        goto out;
    }
    /* --help and --version answer even when the file named by --config is unusable. */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) break;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            action = "help";
        else if (!strcmp(argv[i], "--version") || !strcmp(argv[i], "-V"))
            action = "version";
        if (action) break;
    }
    if (action) {
        status = print_action(action, argv[0]);
        goto out;
    }
    if (path && conf_load_file(&conf, path, &err) < 0) {
        status = config_error(&err);
        goto out;
    }
    int rc = conf_apply_args(&conf, argc, argv, &action, &err);
    if (rc < 0) {
        status = config_error(&err);
        goto out;
    }
    if (rc == 1) {
        status = print_action(action, argv[0]);
        goto out;
    }
    log_threshold = (enum log_level) conf.log_level;
    for (size_t i = 0; i < conf.nwarnings; i++)
        log_warn("config: %s", conf.warnings[i]);

    status = node_run(&conf, path);

out:
    conf_clear(&conf);
    return status;
}
