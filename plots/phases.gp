# Phase breakdown per strategy: stacked bars of each phase's median time (each phase's time is the per-iteration
# maximum over ranks, so the stack is the sum of per-phase maxima: at least the step, more when ranks peak in
# different phases) with the step itself as a black marker. Compute phases warm colours, comm phases blue with
# their wait (imbalance) a hatched light blue on top of their transfer, sync purple. The key lists the segments
# top down as they stack (key invert). Variables: datafile (header: strategy, one quoted title per segment, the step's;
# rows: a quoted strategy label, the segments' us, the step us), nseg, colors (an rgb integer per segment), pats
# (a fill pattern per segment: 3 solid, 4 hatched), title_, outfile, fmt.
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo noenhanced size 900,560 font ",10" } else { set terminal svg noenhanced size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title title_ noenhanced
set style data histograms
set style histogram rowstacked
set boxwidth 0.6
set key outside right top noenhanced invert
set ylabel "us per step: sum of the phases' medians (max over ranks)"
set yrange [0:*]
set grid ytics
plot for [i=1:nseg] datafile using (column(i + 1)):xtic(1) fs pattern int(word(pats, i)) border lc rgb "#333333" lc rgb int(word(colors, i)) title columnheader(i + 1), \
     datafile using 0:(column(nseg + 2)) with points pt 9 ps 2.5 lc rgb "black" title columnheader(nseg + 2)
