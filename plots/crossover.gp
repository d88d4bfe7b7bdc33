# Each strategy's step time over the fastest strategy's against top_k, one line per strategy and family of
# configurations (P, nodes, skew, ...), with the 95% bootstrap interval over repetitions as error bars; dashed, in
# the same colour, the token-volume model's ratio to the family's smallest model volume. 1 is the winner; where
# lines cross, the winner changes. Variables: datafile (nblocks measured blocks, each a header line
# "top_k" "TITLE" "lo" "hi" then columns: top_k ratio lo hi; then nmodel model blocks, each "top_k" "TITLE" then
# columns: top_k ratio), nblocks, nmodel, colors (one rgb integer per measured block), mcolors (per model block),
# kticks (the k present), kmin, kmax, outfile, fmt. Titles are read from the data (columnheader).
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo noenhanced size 900,560 font ",10" } else { set terminal svg noenhanced size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title "step time over the fastest strategy's against top_k (1 = fastest; bars: 95% bootstrap interval)" noenhanced
set xlabel "top_k (log2)" noenhanced
set ylabel "step time / fastest step time (medians)"
set key outside right top noenhanced
set grid
# log2 k with a tick at each k measured, and none where nothing was
set logscale x 2
set xtics ()
do for [t in kticks] { set xtics add (t int(t)) }
set xrange [kmin / 1.25 : kmax * 1.25]
# from 0, so that a 2% difference looks like one
set yrange [0:*]
# an empty iteration (no model) is still parsed by gnuplot: two plot commands
if (nmodel > 0) {
    plot for [i=0:nblocks-1] datafile index i using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb int(word(colors, i + 1)) title columnheader(2), \
         for [j=0:nmodel-1] datafile index (nblocks + j) using 1:2 with lines dt 2 lw 1.5 lc rgb int(word(mcolors, j + 1)) title columnheader(2), \
         1 with lines dt 3 lc rgb "#777777" title "fastest"
} else {
    plot for [i=0:nblocks-1] datafile index i using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb int(word(colors, i + 1)) title columnheader(2), \
         1 with lines dt 3 lc rgb "#777777" title "fastest"
}
