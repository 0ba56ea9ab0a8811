"""Pure-NumPy word2vec: skip-gram with negative sampling (SGNS), evaluation and IO.

Imports NumPy and the standard library only (matplotlib lazily, for PNG figures).
"""
from w2v_numpy.corpus import Corpus, CorpusError, corpus_from_sentences, read_corpus
from w2v_numpy.evaluate import (Embeddings, EvalFileError, analogy_accuracy, pairs_spearman,
                                rare_word_pairs, read_word_pairs, spearman, word_pairs_spearman)
from w2v_numpy.formats import (VectorFileError, load, load_binary, load_npz, load_text, save,
                               save_binary, save_npz, save_text)
from w2v_numpy.trainer import TrainConfig, TrainResult, train

__all__ = [
    'Corpus', 'CorpusError', 'corpus_from_sentences', 'read_corpus', 'Embeddings',
    'EvalFileError', 'analogy_accuracy', 'pairs_spearman', 'rare_word_pairs', 'read_word_pairs',
    'spearman', 'word_pairs_spearman', 'VectorFileError',
    'load', 'load_binary', 'load_npz', 'load_text', 'save', 'save_binary', 'save_npz',
    'save_text', 'TrainConfig', 'TrainResult', 'train',
]
