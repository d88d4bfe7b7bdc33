# report --project: each strategy's projected step time over agrs's against P on the described cluster, one line
# per strategy and configuration family (nblocks blocks of datafile, each a header line "P" "TITLE" then columns:
# P ratio). Below 1 the strategy beats agrs. Variables: datafile, outfile, fmt, nblocks, cluster (reduced text).
if (!exists("fmt")) fmt = 'svg'
if (!exists("cluster")) cluster = ''
if (fmt eq 'png') { set terminal pngcairo noenhanced size 1300,640 font ",10" } else { set terminal svg noenhanced size 1300,640 dynamic font ",10" background rgb 'white' }
set output outfile
set title sprintf("PROJECTED step / agrs step against P\n%s", cluster) noenhanced
set xlabel "P (ranks)" noenhanced
set ylabel "projected step / projected agrs step"
set key outside right top noenhanced
set grid
set logscale x 2
set yrange [0:*]
plot for [i=0:nblocks-1] datafile index i using 1:2 with linespoints lw 2 pt 7 title columnheader(2), \
     1 with lines dt 2 lc rgb "#777777" title "agrs"
