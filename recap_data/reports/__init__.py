"""Pictures of label sets: `report` (tables, plots, report.html in html_page) and `view` (episode
videos and contact sheets, drawn by draw). They read label sets through the store and DuckDB."""
