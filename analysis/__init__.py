"""Tables, statistics and figures of the paper from the results database (reads only the database).

    df = load_results("sqlite:///results.db")          # one row per finished job
    t = build_table(df, 2, aggregation="top3")         # the paper's Table 2, ours beside it
    print(render(t, "markdown"))
    write_report("sqlite:///results.db", "report/")    # every table and figure, claim by claim
"""

from analysis.layouts import TABLES
from analysis.load import load_predictions, load_results
from analysis.noise import noise_summary, render_noise_summary
from analysis.plots import plot_noise, plot_tsne, plot_variance
from analysis.render import FORMATS, render
from analysis.report import write_report
from analysis.tables import AGGREGATIONS, Table, build_table

__all__ = ["load_results", "load_predictions", "build_table", "render", "plot_variance", "plot_noise", "plot_tsne",
           "write_report", "noise_summary", "render_noise_summary", "Table", "AGGREGATIONS", "FORMATS", "TABLES"]
