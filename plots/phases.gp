# Stacked phase breakdown per strategy. Variables: datafile (header: strategy then one quoted column title per
# phase; rows: a quoted strategy label, then the phases' median us), outfile, fmt ('svg' or 'png'), ncols
# (columns in datafile), title_ (plot title).
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo noenhanced size 900,560 font ",10" } else { set terminal svg noenhanced size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title title_ noenhanced
# schema 2 has eighteen phases besides the step: twenty distinct colours (the default cycle has eight)
cols = "#4e79a7 #f28e2b #e15759 #76b7b2 #59a14f #edc948 #b07aa1 #ff9da7 #9c755f #bab0ac #1f3b73 #bcbd22 #17becf #8c564b #e377c2 #7f7f7f #393b79 #637939 #8c6d31 #843c39"
do for [i=1:20] { set linetype i lc rgb word(cols, i) }
set style data histograms
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.6
set key outside right top noenhanced
set ylabel "time per step (us, median)"
set yrange [0:*]
set grid ytics
plot for [i=2:ncols] datafile using i:xtic(1) title columnheader(i)
