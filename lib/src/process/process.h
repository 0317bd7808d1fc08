/* process.h - the process layer (child processes, process.c) as the
 * set-up sees it. */
#ifndef URSA_PROCESS_H
#define URSA_PROCESS_H

#include "core.h"

/* At the loop's close: reaps the children closed before their exit that
 * have ended since, and lets go of the rest. */
void ursa__proc_free(ursa_loop *loop) URSA__HIDDEN;

#endif /* URSA_PROCESS_H */
