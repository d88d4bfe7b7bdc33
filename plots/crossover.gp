# Each strategy's step time over the fastest strategy's against top_k, one line per strategy and family of
# configurations (nblocks blocks of datafile, each a header line "top_k" "TITLE" then columns: top_k ratio). 1 is
# the winner; where lines cross, the winner changes. Variables: datafile, outfile, fmt, nblocks.
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo noenhanced size 900,560 font ",10" } else { set terminal svg noenhanced size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title "step time over the fastest strategy's, against top_k (1 = fastest)" noenhanced
set xlabel "top_k" noenhanced
set ylabel "step time / fastest step time (medians)"
set key outside right top noenhanced
set grid
set xtics 1
set yrange [*:*]
plot for [i=0:nblocks-1] datafile index i using 1:2 with linespoints lw 2 pt 7 title columnheader(2), \
     1 with lines dt 2 lc rgb "#777777" title "fastest"
