"""Text in, token streams out (DESIGN §1, §3, §4): loading a corpus with HF `datasets`, cleaning, the SentencePiece
tokenizer, the prepared streams and their truncated-BPTT windows.

Imports: `pipeline.config` only. Nothing here knows of models, training, Lightning or MLflow.

Public: `prepare.prepare` → `Prepared` (streams, tokenizer, manifest), `prepare.documents` / `document_sources` /
`file_documents`, `prepare.CorpusError`; `cleaning.clean_text`, `cleaning.is_word`; `tokenizer.Tokenizer`,
`tokenizer.TokenizerError`; `windows.BPTTWindows`, `windows.batchify`, `windows.rank_slice`.
"""
