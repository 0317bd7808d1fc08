/* files.h - the files layer (file requests, fs.c) as the set-up sees it. */
#ifndef URSA_FILES_H
#define URSA_FILES_H

#include "core.h"

/* Frees what the layer keeps on a loop (at its close). */
void ursa__fs_free(ursa_loop *loop) URSA__HIDDEN;

#endif /* URSA_FILES_H */
