# Sourced by the round-5 summaries: the evaluation files every one of them reads, appended to $IN (comma-separated).
# add_adam TASK: Adam over its grid (1e-3..3e-2 with the earlier steps) and at 3e-4, its grid's lower edge.
# add_pes_hi ARM TASK: a general-start PES arm (general-pes_ARM_hi) at step scale 1 (meta-seeds 0-2, then 3-5) and at
# the scales of results/flatness_round5_scaled/.
# hfiles RUN[:LABEL] TASK SEED: that meta-seed's evaluation files of the hierarchical arm RUN
# (runs/round5/hierarchical-RUN-sSEED) on TASK (TASK * = every task), wherever evaluate.sh put them
# (results/flatness_round5_scaled/ for vanilla arms, results/flatness_round5_end/ for end-scored ones); needs nullglob.
# With ADAM_GRID=fine (environment) add_adam also reads Adam at 6e-4, 2e-3, 5e-3 and 2e-2 (evaluate.sh adam_fine), so
# that Adam's rate is chosen on a grid as fine as the learned rules' step scales (factors of at most 2).
add_adam() {
  IN=$IN,results/flatness_round5_hi/adam_hi_$1.json,results/flatness_round5_scaled/adam_edge_$1.json
  case ${ADAM_GRID:-coarse} in coarse) ;; fine) IN=$IN,results/flatness_round5_scaled/adam_fine_$1.json ;;
    *) echo "ADAM_GRID must be coarse (the default) or fine, got $ADAM_GRID" >&2; exit 2 ;; esac
}
add_pes_hi() {
  IN=$IN,results/flatness_round5_hi/general-pes_$1_hi_$2.json,results/flatness_round5_hi_more/general-pes_$1_hi_$2.json
  IN=$IN,$(ls results/flatness_round5_scaled/general-pes_$1_hi_$2_s*.json | paste -sd,)
}
hfiles() { echo results/flatness_round5_{scaled,end}/hierarchical-${1%%:*}_$2_s$3[._]*json; }
