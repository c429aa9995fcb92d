"""Trust without labels: estimate, question and correct the classifier (no Qt here).

- ``spot_check``: stratified questions and accuracy estimates with 95 % intervals;
- ``changes``: predictions that changed between zero-shot and adapted, by (from, to) pair;
- ``collapse``: the per-epoch watch for classes losing their pseudo-labels;
- ``unsure``: images both classifiers are unsure of;
- ``user_labels`` and ``corrections``: labels the user gave, trained on as fixed labels;
- ``prompts``: the class-name workbench (near-identical names, template agreement, synonyms).

Known labels (a folder of class subfolders or a labels CSV) are measured by
``must_engine.evaluate``.
"""
