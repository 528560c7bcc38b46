/* refcheck.c: the coordinator's reference-check mode (`switchyard refcheck DIR --workers
 * N`): the workers run one forward/backward of a PyTorch reference case on their rows
 * and send their gradients, routing and loss terms, which are committed as one directory
 * under --out for `switchyard refcheck` to compare. No checkpoints, status or resume. */
#include <inttypes.h>
#include <stdio.h>

#include "coord.h"
#include "log.h"

int coord_refcheck_load(coord *c) {
    if (!c->ref.out_dir) {
        sy_seterr("--refcheck needs --out DIR");
        return -1;
    }
    if (sy_refcase_load(&c->ref.rc, c->ref.dir))
        return -1;
    c->ref.on = 1;
    return 0;
}

const sy_model_cfg *coord_model(const coord *c) { return c->ref.on ? &c->ref.rc.model : &c->cfg.model; }

int coord_global_batch(const coord *c) { return c->ref.on ? c->ref.rc.batch : c->cfg.train.batch_size; }

int coord_refcheck_split(const coord *c, int world) {
    if (c->ref.on && coord_global_batch(c) % world) {
        sy_seterr("refcheck: the case's %d rows do not split evenly over %d workers", coord_global_batch(c), world);
        return -1;
    }
    return 0;
}

void coord_refcheck_finish(coord *c) {
    sy_ckpt_writer *w = c->save.writer;
    sy_run_ckpt_meta(w, c->books.run_id, 0, c->plan.world, NULL);
    const char *keys[4] = {"loss_total", "loss_ce", "loss_aux", "loss_z"};
    double vals[4] = {c->cur.loss.total, c->cur.loss.ce, c->cur.loss.aux, c->cur.loss.z};
    for (int i = 0; i < 4; i++) {
        char v[64];
        snprintf(v, sizeof v, "%.17g", vals[i]);
        sy_ckpt_writer_set(w, keys[i], v);
    }
    if (coord_commit_save(c, 0))
        c->code = 1;
    sy_info("refcheck: loss %.9f (ce %.9f aux %.9f z %.9f) gathered from %d workers", c->cur.loss.total,
            c->cur.loss.ce, c->cur.loss.aux, c->cur.loss.z, c->plan.world);
    c->phase = DONE;
}
