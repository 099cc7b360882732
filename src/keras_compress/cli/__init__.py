"""The `keras-compress` command line: recipes are parsed and validated here.

`keras_compress.cli.main.main` is the entry point; `recipe` parses YAML
recipes and `runner` runs them into a folder of measured artifacts.
"""
