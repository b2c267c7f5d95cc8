// Run identity: what defines a run, so that the run id (the folder name's hash) and the resume check depend on
// the values that define it and on nothing else.
//
// The identity is the resolved config reduced to (1) the sections that shape the run: model (with the chosen
// mixer's sub-table only), task (with the chosen task's sub-table only), train, ops and run.seed — not
// run.name, run.out_dir, train.halt_after_steps, train.dist_backend or [analysis] (analyses read a run; they do not change it) —
// and (2) of those, the values that differ from the defaults (an array of tables that differs is kept with each
// item's non-default values). So adding an option with a default renames no run, and a run folder written
// before the option existed still resumes. Changing an existing default does change what an omitted key means:
// that is a breaking change and must be called out in the commit that does it.
#pragma once
#include <string>

#include "ssmlab/experiments/config.h"

namespace ssmlab::experiments {

// The identity as TOML text (sorted keys; empty when everything is at its default).
std::string identity_text(const Config& cfg);

// 16 hex digits: FNV-1a 64 of identity_text.
std::string identity_hash(const Config& cfg);

// "model.d_model: 64 here, 32 in the folder; train.lr: ..." — the identity keys whose values differ.
std::string identity_diff(const Config& here, const Config& there);

}  // namespace ssmlab::experiments
