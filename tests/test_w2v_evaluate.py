"""Cosine neighbours, 3CosAdd analogies and word-pair Spearman (checked against gensim)."""
import numpy as np
import pytest

from w2v_numpy import evaluate


def test_spearman_with_ties():
  x = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
  y = np.array([2.0, 1.0, 4.0, 4.0, 9.0])
  # Average ranks: x -> 1, 2.5, 2.5, 4, 5; y -> 2, 1, 3.5, 3.5, 5.
  rx, ry = np.array([1, 2.5, 2.5, 4, 5]), np.array([2, 1, 3.5, 3.5, 5])
  expected = np.corrcoef(rx, ry)[0, 1]
  assert evaluate.spearman(x, y) == pytest.approx(expected)
  assert evaluate.spearman(x, -x) == pytest.approx(-1.0)


def test_most_similar_and_a_planted_analogy(tmp_path):
  words = ['king', 'queen', 'man', 'woman', 'apple', 'car']
  royal, male, female = np.eye(4)[0], np.eye(4)[1], np.eye(4)[2]
  vectors = np.stack([royal + male, royal + female, male, female,
                      np.eye(4)[3], np.eye(4)[3] + 0.3 * male])
  emb = evaluate.Embeddings(words, vectors)
  assert emb.most_similar('king', topn=1)[0][0] in ('queen', 'man')
  assert emb.most_similar(['king', 'woman'], ['man'], topn=1)[0][0] == 'queen'
  questions = tmp_path / 'q.txt'
  questions.write_text(': family\nMan King Woman Queen\nman woman king apple\n'
                       'man zebra king queen\n')
  result = evaluate.analogy_accuracy(emb, questions)
  assert (result['correct'], result['total'], result['skipped']) == (1, 2, 1)
  assert result['sections'] == {'family': (1, 2)}


def test_scores_agree_with_gensim_on_the_real_benchmark_files(shared_data):
  keyedvectors = pytest.importorskip('gensim.models').KeyedVectors
  wordsim = shared_data / 'wordsim'
  vocab = []
  for name in ('wordsim353.tsv', 'simlex999.txt'):
    for line in open(wordsim / name, encoding='utf-8'):
      if not line.startswith('#'):
        vocab += line.lower().split('\t')[:2]
  for line in list(open(wordsim / 'questions-words.txt', encoding='utf-8'))[:3000]:
    if not line.startswith(':'):
      vocab += line.lower().split()
  vocab = list(dict.fromkeys(vocab))[:1500]
  rng = np.random.default_rng(0)
  emb = evaluate.Embeddings(vocab, rng.normal(size=(len(vocab), 8)).astype(np.float32))
  # Correlated structure so that analogies are sometimes right.
  emb.vectors[:, :4] += emb.vectors[:, 4:] * 0.5
  kv = keyedvectors(8)
  kv.add_vectors(vocab, emb.vectors)
  for name in ('wordsim353.tsv', 'simlex999.txt'):
    ours = evaluate.word_pairs_spearman(emb, wordsim / name)
    (_, _), (rho, _), oov = kv.evaluate_word_pairs(str(wordsim / name))
    assert ours['spearman'] == pytest.approx(rho, abs=1e-5)
    assert ours['skipped'] / (ours['skipped'] + ours['pairs']) * 100 == pytest.approx(oov)
  ours = evaluate.analogy_accuracy(emb, wordsim / 'questions-words.txt', restrict_vocab=30000)
  score, sections = kv.evaluate_word_analogies(str(wordsim / 'questions-words.txt'),
                                               restrict_vocab=30000)
  total = next(s for s in sections if s['section'] == 'Total accuracy')
  assert ours['correct'] == len(total['correct'])
  assert ours['total'] == len(total['correct']) + len(total['incorrect'])
  assert ours['accuracy'] == pytest.approx(score)
  assert ours['correct'] > 0


def test_rare_word_pairs_keep_pairs_of_rare_words_and_pool_files_by_rank(tmp_path):
  a = tmp_path / 'a.txt'
  a.write_text('x y 1\nx z 9\ny z 5\nx common 7\n', encoding='utf-8')
  b = tmp_path / 'b.tsv'
  b.write_text('Y\tZ\t40\nx\ty\t10\n', encoding='utf-8')        # another scale, mixed case
  counts = {'x': 5, 'y': 12, 'z': 30, 'common': 500}
  pairs = evaluate.rare_word_pairs([a, b], counts, below=20)
  # z (30) and common (500) are not rare; within each file the score becomes its rank / size.
  assert pairs == [('x', 'y', 0.25), ('x', 'y', 0.5)]
  pairs = evaluate.rare_word_pairs([a, b], counts, below=31)
  assert [(w1, w2) for w1, w2, _ in pairs] == [('x', 'y'), ('x', 'z'), ('y', 'z'), ('y', 'z'), ('x', 'y')]
  assert [s for *_, s in pairs] == [0.25, 1.0, 0.5, 1.0, 0.5]
  assert evaluate.rare_word_pairs([a], {'x': 5}, below=20) == []   # a word the corpus lacks drops the pair


def test_pairs_spearman_ignores_case_and_rare_counts_sum_case_variants(tmp_path):
  emb = evaluate.Embeddings(['King', 'queen', 'man'], np.eye(3, dtype=np.float32) + 0.1)
  assert evaluate.pairs_spearman(emb, [('KING', 'queen', 1.0), ('king', 'man', 2.0)])['pairs'] == 2
  f = tmp_path / 'p.txt'
  f.write_text('paris rome 1\n', encoding='utf-8')
  assert evaluate.rare_word_pairs([f], {'Paris': 40, 'paris': 5, 'rome': 5}, below=20) == []
