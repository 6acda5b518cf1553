"""Sphinx settings of the documentation site (read by docs/build.py; the pages come from nbs/)."""
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_ini = ConfigParser(delimiters=['=']); _ini.read(ROOT/'settings.ini', encoding='utf-8')
cfg = _ini['DEFAULT']

project, author, copyright = cfg['lib_name'], cfg['author'], cfg['copyright']
release = version = cfg['version']
html_title = cfg['lib_name']
master_doc = root_doc = 'index'
extensions = ['myst_nb']
exclude_patterns = ['.ipynb_checkpoints', '**/.ipynb_checkpoints']

# the notebooks are shown with the outputs they were saved with; nothing runs here
nb_execution_mode = 'off'
nb_ipywidgets_js = {}   # no widget JavaScript from a CDN
myst_enable_extensions = ['dollarmath', 'amsmath', 'attrs_block']
myst_dmath_allow_space = False  # "a photo of $ that ..." is a dollar, not math
myst_dmath_double_inline = True
myst_all_links_external = True  # links go to this site's pages (made relative) or the web
suppress_warnings = ['myst.header']  # API headings (###) may follow the title directly

# MathJax 2 served from _static (jupyter-server-mathjax's copy), never from a CDN; STIX web fonts
mathjax_path = 'mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full'
_variants = ('double-struck', 'script', 'fraktur', 'bold-script', 'bold-fraktur')
mathjax2_config = {
    'tex2jax': {'inlineMath': [['\\(', '\\)']], 'displayMath': [['\\[', '\\]']],
                'processEscapes': True, 'ignoreClass': 'document',
                'processClass': 'math|output_area'},
    'HTML-CSS': {'availableFonts': [], 'preferredFont': None, 'webFont': 'STIX-Web',
                 'imageFont': None,
                 # MathJax's blank test font is url('about:blank'): Chromium logs an error for it
                 'styles': {'@font-face': {'font-family': 'MathJax_Blank',
                                           'src': "local('MathJax_Blank')"}}},
    # the hidden MathML kept for screen readers would ask for MathJax's TeX fonts (not shipped)
    'NativeMML': {'styles': {f'[mathvariant="{v}"]': {'font-family': 'inherit'}
                             for v in _variants}},
    'fast-preview': {'disabled': True},  # its preview fonts are the TeX ones too
    'menuSettings': {'zoom': 'None', 'CHTMLpreview': False}, 'showMathMenu': False,
    'messageStyle': 'none',
}

html_theme = 'sphinx_book_theme'
html_static_path = ['_static', str(ROOT/'_proc'/'_mathjax')]
html_css_files = ['searle.css']
html_favicon = '_static/favicon.svg'  # a local icon, so the browser asks for no /favicon.ico
html_theme_options = {
    'repository_url': f"https://github.com/{cfg['user']}/{cfg['repo']}",
    'repository_branch': cfg['branch'], 'path_to_docs': cfg['nbs_path'],
    'use_repository_button': True, 'show_toc_level': 2, 'home_page_in_toc': True,
}
html_context = {'default_mode': 'light'}  # else the theme logs an error for an unset mode
html_show_sourcelink = False
html_last_updated_fmt = None
