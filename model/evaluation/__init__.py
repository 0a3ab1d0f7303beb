"""The evaluation harness: benchmark protocols (TSB-AD, NAB, SMD), metrics, baselines and demo data.

Its heavy imports (scikit-learn, TSB-AD, statsmodels) happen inside these modules only;
the service imports nothing from here but the demo data, lazily."""
