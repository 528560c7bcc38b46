/* status_format.h: a coordinator's StatusReply as text, for `switchyard status`: a
 * human table, JSON, or Prometheus text exposition. Pure functions of the decoded reply:
 * no sockets, no clocks (every age is in the reply). NULL strings are treated as "", so a
 * hand-built reply formats like an unpacked one. */
#ifndef SY_STATUS_FORMAT_H
#define SY_STATUS_FORMAT_H

#include <stdio.h>

#include "switchyard.pb-c.h"

/* No line of the table is wider than this many terminal columns. */
#define SY_STATUS_WIDTH 100

/* How many events the table shows (newest first); JSON and Prometheus show all. */
#define SY_STATUS_TABLE_EVENTS 6

/* The human table: run header (run, state, epoch, step/total and %, losses, val loss,
 * tokens/s, step time by phase, workers, checkpoint, uptime), one row per worker, one
 * table per switch layer (share, drop rate, top language per expert) and the newest
 * events. Every line fits SY_STATUS_WIDTH columns: long strings are cut with "...",
 * control characters and invalid UTF-8 are shown as '?'. Returns 0, or -1 when writing
 * to out failed. */
int sy_status_table(FILE *out, const Switchyard__StatusReply *r);

/* One JSON object (RFC 8259) with every field of the reply under the .proto's snake_case
 * names, nested arrays for workers/experts/languages/events. NaN and infinities are null;
 * 64-bit integers are plain numbers; strings are escaped (quotes, backslash, control
 * characters), non-ASCII UTF-8 passes through, invalid UTF-8 becomes U+FFFD. Ends with a
 * newline. Returns 0, or -1 when writing failed. */
int sy_status_json(FILE *out, const Switchyard__StatusReply *r);

/* Prometheus text exposition format 0.0.4: a # HELP and # TYPE line per metric family,
 * names switchyard_* with unit suffixes, each family's samples contiguous, label values
 * escaped (\\, \", \n), NaN as NaN. Families without samples are left out. Workers are
 * labelled {worker="ID",rank="R",host="H"} (the id is unique per worker process, ranks
 * change when the mesh is re-planned), experts {layer="L",expert="E"} with L the model
 * layer index. Returns 0, or -1 when writing failed. */
int sy_status_prom(FILE *out, const Switchyard__StatusReply *r);

#endif
