/* SPDX-License-Identifier: MIT */
/*
 * node: runs one node: the wiring of every module (src/node.c), the only code that knows them
 * all. main() reads the arguments and configuration and calls node_run.
 */
#ifndef ARBORKV_NODE_H
#define ARBORKV_NODE_H

struct conf;

#define NODE_EXIT_CONFIG 2 /* exit status: bad configuration or command line */

/*
 * Runs a node with configuration c (config_path: the file it came from, for messages, or NULL)
 * until SIGTERM, SIGINT or SHUTDOWN. Returns the process exit status: 0 after an orderly
 * shutdown, NODE_EXIT_CONFIG for a configuration only found unusable at startup, 1 when the node
 * could not start (logged).
 */
int node_run(const struct conf *c, const char *config_path);

#endif
