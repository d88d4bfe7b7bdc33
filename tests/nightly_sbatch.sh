#!/usr/bin/env bash
# ci/nightly.sbatch's set-up without Slurm: run with bash and fake SLURM_* variables from another directory, as
# Slurm runs it (a copy in a spool directory, the submit directory somewhere else), it must find the repository
# (EPB_ROOT, its own location, the job's recorded Command from scontrol, SLURM_SUBMIT_DIR), create results/ in a
# fresh clone, log there and pass ci/nightly's exit status on; without a way to find the repository it exits 2
# and creates nothing. The repository is a copy with a ci/nightly that only reports where it ran (the set-up is
# under test, not the job); the last check runs the real job through the script. TAP output.
set -u
ROOT=$(realpath "$1") BUILD=$(realpath "$2")
source "$(dirname "$0")/tap.sh"
unset EPB_ROOT NIGHTLY_RESULTS SLURM_JOB_ID SLURM_SUBMIT_DIR
repo=$work/clone
mkdir -p "$repo/ci" "$work/elsewhere" "$work/spool/job00042" "$work/bin"
cp "$ROOT/ci/nightly.sbatch" "$repo/ci/"
# the stand-in job: where it ran and with which results directory, and a chosen exit status
cat >"$repo/ci/nightly" <<'EOF'
#!/usr/bin/env bash
echo "fake nightly ran in $PWD results=${NIGHTLY_RESULTS:-default}"
exit "${FAKE_RC:-0}"
EOF
chmod +x "$repo/ci/nightly"
spooled=$work/spool/job00042/slurm_script # where slurmd puts its copy
cp "$repo/ci/nightly.sbatch" "$spooled"
cd "$work/elsewhere" || exit 99

# ran_in LOG: the stand-in ran in the clone, and its output reached results/slurm-42.out
ran_in() { grep -q "fake nightly ran in $repo results=default" "$1" && grep -q "fake nightly ran in $repo" "$repo/results/slurm-42.out"; }

SLURM_JOB_ID=42 SLURM_SUBMIT_DIR=$work/elsewhere FAKE_RC=4 bash "$repo/ci/nightly.sbatch" >"$work/log" 2>&1; rc=$?
[ $rc = 4 ] && ran_in "$work/log" && grep -q "found by the script's location" "$work/log" && grep -q "ci/nightly exited 4" "$repo/results/slurm-42.out"
tap_ok $? "run in place from another directory in a fresh clone: finds it, creates results/, logs there, exit 4 passed on" "$work/log"

rm -rf "$repo/results"
SLURM_JOB_ID=42 SLURM_SUBMIT_DIR=$repo bash "$spooled" >"$work/log" 2>&1; rc=$?
[ $rc = 0 ] && ran_in "$work/log" && grep -q "found by SLURM_SUBMIT_DIR" "$work/log"
tap_ok $? "a spooled copy submitted from the repository: found by SLURM_SUBMIT_DIR" "$work/log"

rm -rf "$repo/results"
cat >"$work/bin/scontrol" <<EOF
#!/bin/sh
[ "\$*" = "show job -o 42" ] || exit 1
echo "JobId=42 JobName=epbench-nightly UserId=u(1) Command=$repo/ci/nightly.sbatch WorkDir=$work/elsewhere StdOut=/tmp/x"
EOF
chmod +x "$work/bin/scontrol"
PATH=$work/bin:$PATH SLURM_JOB_ID=42 SLURM_SUBMIT_DIR=$work/elsewhere bash "$spooled" >"$work/log" 2>&1; rc=$?
[ $rc = 0 ] && ran_in "$work/log" && grep -q "found by the job's Command" "$work/log"
tap_ok $? "a spooled copy submitted by absolute path from elsewhere (scrontab): found by the job's Command" "$work/log"

rm -rf "$repo/results"
EPB_ROOT=$repo SLURM_JOB_ID=42 SLURM_SUBMIT_DIR=$work/elsewhere bash "$spooled" >"$work/log" 2>&1; rc=$?
[ $rc = 0 ] && ran_in "$work/log" && grep -q "found by EPB_ROOT" "$work/log"
tap_ok $? "a spooled copy with EPB_ROOT: found by EPB_ROOT" "$work/log"

rm -rf "$repo/results"
SLURM_JOB_ID=42 SLURM_SUBMIT_DIR=$work/elsewhere bash "$spooled" >"$work/log" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "cannot find the epbench repository" "$work/log" && [ ! -e "$repo/results" ] &&
    [ -z "$(ls -A "$work/elsewhere")" ] && ! grep -q "fake nightly" "$work/log"
tap_ok $? "a spooled copy with no way to the repository: exit 2 naming EPB_ROOT, nothing created or run" "$work/log"
EPB_ROOT=$work/elsewhere SLURM_JOB_ID=42 bash "$spooled" >"$work/log" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "EPB_ROOT=$work/elsewhere is not an epbench repository" "$work/log" && ! grep -q "fake nightly" "$work/log"
tap_ok $? "EPB_ROOT that is not a repository: exit 2" "$work/log"

# the real job through the script: the tiny matrix, the test's build, results in a fresh scratch directory
echo "--coll alltoall -b 1M -e 1M -n 20 -w 2 --ranks 1 -c 0" >"$work/m"
mkdir -p "$work/shm" "$work/tmp"
OMPI_MCA_btl_vader_backing_directory=$work/shm OMPI_MCA_orte_tmpdir_base=$work/tmp NIGHTLY_RESULTS=$work/real/results \
    NIGHTLY_MATRIX=$work/m NIGHTLY_REPS=3 NIGHTLY_BUILD=$BUILD NIGHTLY_NO_BUILD=1 SLURM_JOB_ID=43 \
    SLURM_SUBMIT_DIR=$work/elsewhere bash "$ROOT/ci/nightly.sbatch" >"$work/log" 2>&1; rc=$?
[ $rc = 0 ] && grep -q "this night becomes the baseline" "$work/real/results/slurm-43.out" && [ -s "$work/real/results/baseline.csv" ]
tap_ok $? "the real ci/nightly through the script: exit 0, its output in NIGHTLY_RESULTS/slurm-43.out" "$work/log"
tap_done
