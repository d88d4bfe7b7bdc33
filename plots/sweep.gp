# Step time against one dimension (top_k, experts, ranks) per strategy. Variables: datafile (header: the
# dimension then one column per strategy, median step us), outfile, fmt, ncols, xlab, title_.
if (!exists("fmt")) fmt = 'svg'
if (fmt eq 'png') { set terminal pngcairo noenhanced size 900,560 font ",10" } else { set terminal svg noenhanced size 900,560 dynamic font ",10" background rgb 'white' }
set output outfile
set title title_ noenhanced
set xlabel xlab noenhanced
set ylabel "step time (us, median)"
set key top left noenhanced
set grid
set yrange [0:*]
set xtics 1
if (xlab eq 'ranks' || xlab eq 'experts') { set logscale x 2; set xtics auto }
plot for [i=2:ncols] datafile using 1:i with linespoints lw 2 pt 7 title columnheader(i)
